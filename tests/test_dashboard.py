"""The home page describes the demo atlas (model, corpus, SAEs and their quality, triage progress),
and browse code never imports torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from analysis.atlas.reader import open_atlas, read_meta
from analysis.paths import DEMO_DIR, REPO_ROOT

HOME = str(REPO_ROOT / "dashboard" / "Home.py")


def test_home_opens_the_demo_atlas_and_names_its_model_and_every_sae(demo_metrics, user_db):
    connection = open_atlas(DEMO_DIR / "atlas.duckdb")
    meta, saes = read_meta(connection), connection.execute("SELECT * FROM saes ORDER BY sae").df()
    assert meta["tokens"] >= 1_000_000
    app = AppTest.from_file(HOME, default_timeout=30).run()
    assert not app.exception and not app.error
    assert "GPT2LMHeadModel" in app.header[0].value
    assert [m.value for m in app.metric][1:3] == ["4", "256"]
    assert any(f"{meta['tokens']:,} tokens of the demo corpus" in c.value for c in app.caption)
    shown = app.dataframe[1].value
    assert list(shown["name"]) == sorted(demo_metrics["saes"]) == list(saes["name"])
    assert list(shown["dead"]) == list(saes["dead"]) and list(shown["reviewed"]) == [0] * len(saes)
    assert set(app.dataframe[2].value["kind"]) == {"transcoder", "SAE"}


@pytest.mark.slow
def test_browse_code_does_not_import_torch():
    code = (
        "import sys; from dashboard.browse.bundle import read_bundle; read_bundle(); "
        "import dashboard.browse.feature_queries, dashboard.shell.page, dashboard.browse.examples_view; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_browse_pages_run_without_importing_torch(tmp_path):
    """Home, Features, a Feature page (with its Steer link and text-test form), Triage and Lists,
    each run in a fresh interpreter: none of them may load torch."""
    code = f"""
import os, sys
os.environ["SAESCOPE_USER_DB"] = {str(tmp_path / "userdata.duckdb")!r}
from streamlit.testing.v1 import AppTest
for path, query in [(None, {{}}), ("pages/1_Features.py", {{}}), ("pages/2_Feature.py", {{"sae": "resid-L2", "latent": "3"}}),
                    ("pages/3_Triage.py", {{}}), ("pages/4_Lists.py", {{}})]:
    app = AppTest.from_file("dashboard/Home.py", default_timeout=60)
    if path:
        app.switch_page(path)
    for key, value in query.items():
        app.query_params[key] = value
    app.run()
    assert not app.exception, (path, app.exception)
    assert "torch" not in sys.modules, f"{{path}} imported torch"
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_home_says_which_quality_numbers_are_sampled_and_shows_a_partial_atlas(tmp_path, monkeypatch, user_db):
    """The quality caption names the sampled windows; an atlas merged with --allow-partial shows its coverage."""
    import shutil

    import duckdb

    folder = tmp_path / "atlases"
    folder.mkdir()
    partial = folder / "partial.duckdb"
    shutil.copy(DEMO_DIR / "atlas.duckdb", partial)
    coverage = '{"windows": 4096, "total_windows": 8192, "missing": [[4096, 8192]]}'
    with duckdb.connect(str(partial)) as connection:
        connection.execute("INSERT INTO meta VALUES ('coverage', ?)", [coverage])
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(folder))
    app = AppTest.from_file(HOME, default_timeout=30)
    app.query_params["atlas"] = "partial"
    app.run()
    assert not app.exception and not app.error
    captions = [c.value for c in app.caption]
    assert any(
        "are measured on the 64 windows spread over the run whose id is a multiple of 128" in c for c in captions
    )
    assert "Partial atlas: 4,096 of the run's 8,192 windows (50%); missing window ranges [[4096, 8192]]." in captions
