"""The Watchlists page through Streamlit's AppTest on the demo bundle: build a watchlist from typed
features, run it against the live model (recorded in the runs folder), see it in the history; a bad
watchlist is one plain-text line, and text from the user stays plain text."""

from __future__ import annotations

import json

import pytest

from dashboard.shell.plain_text import md
from tests.dashboard_app import HOSTILE_LABEL, by_label, page

pytestmark = [pytest.mark.model, pytest.mark.slow]

WATCHLISTS = "pages/9_Watchlists.py"
TEXTS = "The meeting has been moved to Thursday afternoon.\nShe bought a new bicycle and rode it to work."


def test_build_run_and_history_of_a_watchlist(user_db, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SAESCOPE_WATCH_RUNS", str(runs))
    app = page(WATCHLISTS, user="wanda")
    assert not app.exception and not app.error
    by_label(app.text_area, "Features, one SAE:LATENT per line").set_value("resid-L2:345\ntranscoder-L1:7")
    by_label(app.text_area, "Texts the checks measure on, one per line").set_value(TEXTS)
    by_label(app.text_input, "Watchlist name").set_value(HOSTILE_LABEL).run()  # as leaving the field does
    by_label(app.button, "Build watchlist").click().run()
    assert not app.exception and not app.error, app.error
    toml = app.code[0].value
    assert toml.count("[[features]]") == 2 and toml.count('expect = "mean_rise_at_most"') == 2
    assert (by_label(app.text_area, "Watchlist (TOML, format = 1)").value or "").strip() == toml.strip()

    by_label(app.button, "Run against the loaded model").click().run()
    assert not app.exception and not app.error, app.error
    assert [s.value for s in app.success][-1] == "All checks hold."
    (record_file,) = runs.glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["user"] == "wanda (dashboard)" and record["watchlist"]["name"] == HOSTILE_LABEL
    assert [c["measured"]["rise"] for c in record["checks"]] == [0.0, 0.0], "same model, same texts: no rise"
    history = next(d.value for d in app.dataframe if "run" in d.value.columns)
    assert list(history["run"]) == [record["run_id"]] and list(history["watchlist"]) == [HOSTILE_LABEL]
    shown = "\n".join(element.value for element in app.markdown) + "\n".join(c.value for c in app.caption)
    assert "<script>" not in shown


def test_a_bad_watchlist_is_one_plain_line_and_nothing_is_recorded(user_db, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("SAESCOPE_WATCH_RUNS", str(runs))
    app = page(WATCHLISTS, user="wanda")
    by_label(app.text_area, "Watchlist (TOML, format = 1)").set_value('format = 1\nname = "<b>x</b>"\n').run()
    by_label(app.button, "Run against the loaded model").click().run()
    assert not app.exception
    (error,) = app.error
    assert error.value == md("watchlist.toml: no [[features]]: name at least one feature to watch")
    assert not runs.exists() or not list(runs.iterdir())
