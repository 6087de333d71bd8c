"""What a precompute run is asked to do, and the checks it passes before anything is loaded.

Torch-free: the CLI checks a run here in well under a second, before it imports torch or loads a
model, so ``--context 100000`` or ``--batch 0`` is one line at once rather than an allocation that
the kernel kills or a loop that never ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from analysis.atlas.corpus_source import check_corpus_spec
from analysis.errors import SAEscopeError
from analysis.preflight import EXACT_NEIGHBOURS_UP_TO, MAX_TOP_K, model_context, output_file


class PrecomputeError(SAEscopeError, ValueError):
    """Bad precompute input, reported as one line."""


@dataclass(frozen=True)
class PrecomputeConfig:
    model: str
    saes: tuple[str, ...]
    corpus: str
    tokens: int
    out: Path
    context: int = 128
    top_k: int = 20
    seed: int = 0
    batch_windows: int = 128  # halved on out-of-memory
    device: str | None = None
    dtype: str = "float32"
    shard: tuple[int, int] = (0, 1)
    latent_shard: tuple[int, int] = (0, 1)  # latents [j*d/m, (j+1)*d/m) of every SAE (latent_range.py)
    max_worker_bytes: int | None = None  # refuse a run whose worker_memory estimate is larger
    quality_windows: int = 64
    checkpoint_seconds: float = 300.0
    overwrite: bool = False
    resume: bool = False
    strict: bool = False  # refuse undecodable corpus bytes instead of replacing them
    exact_neighbours_up_to: int = EXACT_NEIGHBOURS_UP_TO  # latents in the run; above, faiss's index

    @property
    def checkpoint_path(self) -> Path:
        return self.out.with_name(self.out.name + ".checkpoint")

    @property
    def stream_tokens(self) -> int:
        """Corpus tokens the run's windows need (each window holds BOS and ``context - 1`` of them)."""
        return -(-self.tokens // self.context) * (self.context - 1)


def parse_shard(text: str, flag: str = "--shard") -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise PrecomputeError(f"{flag} must be i/n with 0 <= i < n, not {text!r}")
    return int(match[1]), int(match[2])


_UNITS = {"": 1, "B": 1, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_bytes(text: str, flag: str = "--max-worker-memory") -> int:
    """``512MiB``, ``8GiB``, ``2.5GB`` or a number of bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match[2].upper() if match else ""
    if not match or unit not in _UNITS or float(match[1]) <= 0:
        raise PrecomputeError(f"{flag} must be a size such as 512MiB, 8GiB or 2.5GB, not {text!r}")
    return int(float(match[1]) * _UNITS[unit])


def check_config(config: PrecomputeConfig) -> None:
    """Raise PrecomputeError (or CorpusError, ArgumentError) for the first argument that cannot work."""
    if config.tokens <= 0:
        raise PrecomputeError("--tokens must be a positive number of tokens")
    if config.context < 2:
        raise PrecomputeError("--context must be at least 2 (BOS and one token)")
    if config.batch_windows < 1:
        raise PrecomputeError(f"--batch must be at least 1 window, not {config.batch_windows}")
    if not 1 <= config.top_k <= MAX_TOP_K:
        raise PrecomputeError(f"--top-k must be from 1 to {MAX_TOP_K}, not {config.top_k}")
    if config.checkpoint_seconds < 0:
        raise PrecomputeError("--checkpoint-minutes must be 0 or more")
    if not config.saes:
        raise PrecomputeError("give at least one --sae")
    if config.out.is_file() and not config.overwrite:
        checkpoint = " (a complete atlas; --resume only continues an unfinished run)" if config.resume else ""
        raise PrecomputeError(f"{config.out} exists{checkpoint}; pass --overwrite to replace it")
    output_file(config.out, overwrite=True)
    check_corpus_spec(config.corpus)
    limit = model_context(config.model)
    if limit is not None and config.context > limit:
        raise PrecomputeError(f"--context {config.context} is longer than the model's context of {limit} tokens")
