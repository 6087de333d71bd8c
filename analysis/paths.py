"""Where the checkout's own files are: the one definition of the repository root and the demo bundle.

Torch-free, so dashboard pages can import it. The package is installed editable from a checkout
(``pip install -e .``), and the demo bundle lives beside the packages, not inside them.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO_ROOT / "data" / "demo"
DEMO_MODEL = DEMO_DIR / "model"
DEMO_SAES = DEMO_DIR / "saes"
DEMO_ATLAS = DEMO_DIR / "atlas.duckdb"
STREAMLIT_DIR = REPO_ROOT / ".streamlit"
DASHBOARD_HOME = REPO_ROOT / "dashboard" / "Home.py"
