"""The model libraries (torch, transformers, transformer-lens, sae-lens, circuit-tracer), imported
one session at a time.

Why: Streamlit runs each session's script in its own thread, and transformers resolves its names
lazily. When one session was importing it to load the live model (Steer) while another page
imported circuit-tracer (Graph), the second failed with ``cannot import name 'AutoTokenizer' from
'transformers'``. Every page that needs these libraries imports them through this lock first; once
imported, the call costs a lock and nothing more.
"""

from __future__ import annotations

import threading

_IMPORT_LOCK = threading.Lock()


def import_model_stack() -> None:
    """Import our modules that pull in the model libraries (and so resolve every lazily loaded name
    we use), holding a process-wide lock."""
    with _IMPORT_LOCK:
        import analysis.graphs.compute  # noqa: F401  (circuit-tracer, and through it transformers' names)
        import analysis.live_model  # noqa: F401  (transformer-lens, sae-lens and our loaders)
