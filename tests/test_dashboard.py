"""The home page names the demo model and its SAEs, and browse code never imports torch."""
from __future__ import annotations

import subprocess
import sys

from streamlit.testing.v1 import AppTest

from tests.conftest import REPO_ROOT


def test_home_names_the_demo_model_and_every_sae(demo_metrics):
    app = AppTest.from_file(str(REPO_ROOT / "dashboard" / "Home.py"), default_timeout=30).run()
    assert not app.exception
    assert "GPT2LMHeadModel" in app.header[0].value
    shown = app.dataframe[0].value
    assert list(shown["name"]) == sorted(demo_metrics["saes"])
    assert set(shown["kind"]) == {"transcoder", "SAE"}
    assert [m.value for m in app.metric][1:3] == ["4", "256"]


def test_reading_a_bundle_does_not_import_torch():
    code = "import sys; from dashboard.bundle import read_bundle; read_bundle(); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_home_opens_the_demo_atlas_by_default():
    from dashboard.atlas_summary import read_atlas_summary

    summary = read_atlas_summary()
    assert summary.meta["tokens"] >= 1_000_000 and list(summary.saes["name"]) == sorted(summary.saes["name"])
    app = AppTest.from_file(str(REPO_ROOT / "dashboard" / "Home.py"), default_timeout=30).run()
    assert not app.exception and not app.error
    assert summary.description in [caption.value for caption in app.caption]
    shown = app.dataframe[1].value
    assert list(shown["name"]) == list(summary.saes["name"]) and list(shown["dead"]) == list(summary.saes["dead"])
