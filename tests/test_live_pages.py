"""The pages that run the model (Steer, Search by text, the feature page's text test) through
Streamlit's AppTest on the demo bundle: real model, real SAEs, real user-data file."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys

import duckdb
import pytest
from streamlit.testing.v1.element_tree import Status

from analysis.paths import DEMO_DIR
from analysis.preflight import DEFAULT_MAX_DENSITY
from analysis.steering_methods import DEFAULT_METHOD, METHODS
from dashboard.userdata import open_user_store
from tests.atlas_rows import one_row
from tests.dashboard_app import by_label, html_bodies, make_atlas_of_model, page

pytestmark = pytest.mark.model

STEER, SEARCH, FEATURE = "pages/5_Steer.py", "pages/6_Search_by_text.py", "pages/2_Feature.py"


@pytest.fixture(autouse=True, scope="module")
def _torch_imported() -> None:
    """torch and the loaders imported before the first page runs, so that page's AppTest timeout
    (60 s) is not spent on imports on a loaded machine; the loading test still sees every stage."""
    import analysis.live_model  # noqa: F401


def atlas_value(query: str, params: list) -> tuple:
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as connection:
        return one_row(connection, query, params)


def generate(app):
    by_label(app.button, "Generate").click().run()
    assert not app.exception, app.exception
    return app


def test_steering_from_a_link_streams_both_completions_and_records_the_run(user_db):
    app = page(STEER, user="dana", steer="transcoder-L3:5:40", method="additive")
    assert not app.exception and not app.error
    assert any("Live model on **cpu**" in c.value for c in app.caption)
    assert by_label(app.number_input, "coefficient").value == 40.0
    generate(app)
    default, steered = [h.proto.body for h in app.get("html")[:2]]
    assert default != steered and "first token that differs" in steered
    assert any("Recorded as run" in c.value and "dana" in c.value for c in app.caption)
    runs = open_user_store(user_db).experiments("steering")
    assert list(runs["reviewer"]) == ["dana"] and list(runs["title"]) == ["In the beginning"]
    record = open_user_store(user_db).experiment(runs.to_dict("records")[0]["id"])["record"]
    assert record["targets"] == [{"sae": "transcoder-L3", "latent": 5, "coefficient": 40.0}]
    assert record["model_hash"] == atlas_value("SELECT value->>'content_hash' FROM meta WHERE key = 'model'", [])[0]
    assert record["divergence"]["next_tokens"], "the distribution shift at the first difference is kept"
    assert app.query_params["steer"] == "transcoder-L3:5:40"


def test_the_method_choice_offers_exactly_the_registered_methods(user_db):
    app = page(STEER, steer="resid-L2:3:5", method="clamp")
    method = by_label(app.radio, "Method")
    assert list(method.options) == list(METHODS) and method.value == "clamp"
    assert page(STEER, steer="resid-L2:3:5", method="multiply").radio[0].value == DEFAULT_METHOD


def test_a_recorded_run_runs_again_to_the_same_text(user_db):
    app = generate(page(STEER, steer="resid-L2:3:20"))
    app.session_state["steer_history"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    by_label(app.button, "Run again").click().run()
    assert not app.exception
    store = open_user_store(user_db)
    first, second = (store.experiment(i)["record"] for i in store.experiments("steering")["id"])
    assert first["steered"] == second["steered"] and first["default"] == second["default"]


def test_the_default_coefficient_follows_the_latents_max_activation(user_db):
    max_act = atlas_value("SELECT max_act FROM features WHERE sae = 0 AND latent = 3", [])[0]
    app = page(STEER, steer="resid-L2:3")
    assert by_label(app.number_input, "coefficient").value == pytest.approx(4 * max_act, rel=1e-4)


def test_bad_steering_input_gets_a_clear_message(user_db):
    app = page(STEER, steer=["resid-L2:99999:5", "nonsense"])
    assert any("no such feature" in e.value and "99999" in e.value for e in app.error)
    assert by_label(app.button, "Generate").disabled, "nothing left to steer"
    app = page(STEER, steer="resid-L2:3:5")
    app.session_state["steer_prompt"] = "   "
    generate(app)
    assert any("empty" in e.value for e in app.error)


def test_a_hostile_prompt_is_shown_as_text(user_db):
    app = page(STEER, steer="resid-L2:3:5")
    app.session_state["steer_prompt"] = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    generate(app)
    bodies = html_bodies(app)
    assert "<script>" not in bodies and "<img" not in bodies
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bodies


def test_live_pages_say_why_they_are_off_when_the_model_is_not_here(user_db, tmp_path, monkeypatch):
    make_atlas_of_model(tmp_path / "atlases", "browse-only", "/nowhere/shared-model")
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    for path in (STEER, SEARCH):
        app = page(path, atlas="browse-only")
        assert not app.exception
        assert any("disabled for this atlas" in w.value and "/nowhere/shared-model" in w.value for w in app.warning)
    feature = page(FEATURE, atlas="browse-only", sae="resid-L2", latent="3")
    assert not feature.exception and not feature.error, "browsing still works"


def test_a_model_that_fails_to_load_is_reported_not_raised(user_db, tmp_path, monkeypatch, caplog):
    """One line on the page; the traceback in the server's log."""
    broken = tmp_path / "broken-model"
    shutil.copytree(DEMO_DIR / "model", broken)
    (broken / "model.safetensors").write_bytes(b"these are not weights" * 10)
    make_atlas_of_model(tmp_path / "atlases", "broken", str(broken))
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    app = page(STEER, atlas="broken", steer="resid-L2:3:5")
    assert not app.exception
    assert any("could not be loaded" in w.value for w in app.warning), [w.value for w in app.warning]
    [record] = [r for r in caplog.records if r.name == "dashboard.live.service"]
    assert record.levelname == "ERROR" and str(broken) in record.getMessage() and record.exc_info is not None


def test_search_by_text_lists_the_latents_a_text_excites_with_links(user_db):
    app = page(SEARCH, text="And the LORD spake unto Moses, saying")
    assert not app.exception and not app.error
    sae_index = {"resid-L2": 0, "transcoder-L0": 1, "transcoder-L1": 2, "transcoder-L2": 3, "transcoder-L3": 4}

    def density(sae: str, latent) -> float:
        return atlas_value("SELECT density FROM features WHERE sae = ? AND latent = ?", [sae_index[sae], int(latent)])[
            0
        ]

    assert by_label(app.number_input, "max density").value == DEFAULT_MAX_DENSITY == 0.01
    table = app.dataframe[0].value
    assert len(table) == 25 and set(table["SAE"]) <= set(sae_index)
    assert table["score"].is_monotonic_decreasing
    assert all(density(sae, latent) <= 0.01 for sae, latent in zip(table["SAE"], table["latent"]))
    assert all(table["automatic label"] != "")  # sparse latents carry labels (dense ones mostly did not)
    first = table.iloc[0]
    assert first["feature"] == f"Feature?atlas=demo&sae={first['SAE']}&latent={first['latent']}"
    assert first["steer"] == f"Steer?atlas=demo&steer={first['SAE']}%3A{first['latent']}"
    by_label(app.number_input, "max density").set_value(1.0).run()
    unlimited = app.dataframe[0].value
    assert max(density(sae, latent) for sae, latent in zip(unlimited["SAE"], unlimited["latent"])) > 0.01

    by_label(app.number_input, "max density").set_value(0.01)
    by_label(app.toggle, "per token").set_value(True).run()
    assert not app.exception and not app.error
    per_token = app.dataframe[0].value
    tokens = ["And", " the", " LORD", " spake", " unto", " Moses", ",", " saying"]
    assert list(per_token["token"]) == [f"{i}: {t.replace(' ', '·')}" for i, t in enumerate(tokens, 1)]
    link = re.compile(r"Feature\?atlas=demo&sae=([\w-]+)&latent=(\d+)#\1 #\2 · \d+\.\d\d")
    assert all(link.fullmatch(cell) for column in ("#1", "#2", "#3") for cell in per_token[column])
    assert len(app.dataframe[1].value) == 3 * len(tokens)  # every hit, one row each, in the expander


def test_testing_text_on_a_feature_page_highlights_each_token_and_marks_the_histogram(user_db):
    window = atlas_value(
        "SELECT window_id FROM examples WHERE sae = 0 AND latent = 938 AND kind = 'top' AND rank = 0", []
    )[0]
    tokens = atlas_value("SELECT tokens FROM windows WHERE window_id = ?", [window])[0]
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as connection:
        text = "".join(one_row(connection, "SELECT text FROM tokens WHERE token = ?", [t])[0] for t in tokens[1:])
    app = page(FEATURE, sae="resid-L2", latent="938")
    assert not app.exception
    by_label(app.text_area, "Test your text").set_value(text)
    [button for button in app.button if button.label == "Test"][0].click().run()
    assert not app.exception and not app.error
    caption = next(c.value for c in app.caption if c.value.startswith("max "))
    assert "marked on the histogram" in caption
    figure = app.get("plotly_chart")[0].proto.spec
    assert "your text" in figure


def test_a_steer_link_from_another_feature_replaces_the_features_being_edited(user_db):
    app = page(STEER, steer="resid-L2:3:5")
    app.query_params["steer"] = "transcoder-L1:7:12"  # the Steer button on another feature's page
    app.run()
    assert not app.exception
    assert [b.label for b in app.button if b.label == ":material/close:"] == [":material/close:"]
    assert by_label(app.number_input, "coefficient").value == 12.0
    by_label(app.number_input, "coefficient").set_value(250.0).run()  # beyond the slider's old range
    assert not app.exception
    assert app.query_params["steer"] == "transcoder-L1:7:250"


def test_a_fresh_server_process_shows_the_loading_stages_and_reports_the_real_wait(user_db):
    """The first request of a server process draws a status box naming each stage while it loads
    (imports, model, SAEs, fit check on the device); the caption then gives the wait from that first
    request until ready, imports included, and later pages of the process reuse the model."""
    from dashboard.live.service import _slot

    _slot.clear()  # what a fresh server process has: no model loaded yet
    app = page(STEER, steer="resid-L2:3:5")
    assert not app.exception
    [status] = [e for e in app.main.children.values() if type(e).__name__ == "Status"]
    assert isinstance(status, Status)
    assert status.label.startswith("Live model ready in")
    assert [m.value for m in status.markdown] == [
        "imports (torch, transformer-lens, sae-lens)…",
        "model…",
        "SAEs…",
        "fit check on cpu…",
    ]
    caption = next(c.value for c in app.caption if "Live model on" in c.value)
    numbers = re.search(
        r"ready ([\d.]+) s after this server's first request for it \\\(imports ([\d.]+) s, model ([\d.]+) s, "
        r"SAEs ([\d.]+) s, fit check on cpu ([\d.]+) s\\\)",
        caption,
    )
    assert numbers, caption
    ready, *stages = map(float, numbers.groups())
    assert ready >= sum(stages) - 0.2  # each shown to 0.1 s
    again = page(STEER, steer="resid-L2:3:5")
    assert not [e for e in again.main.children.values() if type(e).__name__ == "Status"], "loaded once per process"
    assert any(numbers[0] in c.value for c in again.caption), "the same wait, not the second page's"


def test_a_feature_is_found_by_its_label_and_added_with_its_scale_explained(user_db):
    app = page(STEER)
    by_label(app.selectbox, "SAE").set_value("resid-L2").run()
    by_label(app.text_input, "Find a feature by its label").set_value("LORD").run()
    [picker] = [s for s in app.selectbox if s.label.startswith("Feature (")]
    lord = [o for o in picker.options if "LORD" in o]
    assert lord and all(o.startswith("#") for o in picker.options), picker.options
    picker.set_value(lord[0]).run()
    by_label(app.button, "Add").click().run()
    assert not app.exception
    latent = int(lord[0][1:].split(" ")[0])
    max_act = atlas_value("SELECT max_act FROM features WHERE sae = 0 AND latent = ?", [latent])[0]
    assert by_label(app.number_input, "coefficient").value == pytest.approx(4 * max_act, rel=1e-4)
    scale = next(c.value for c in app.caption if c.value.startswith("coefficient "))
    assert "×4.00 of its max activation" in scale and f"{max_act:.4g}" in scale and "default ×4" in scale
    assert app.query_params["steer"].startswith(f"resid-L2:{latent}:")


def test_a_steer_link_reopens_the_prompt_and_the_history_run_it_names(user_db):
    app = page(STEER, steer="resid-L2:938:25")
    app.session_state["steer_prompt"] = "To install the package, run"
    app.session_state["steer_max_new_tokens"] = 8
    generate(app)
    assert app.query_params["prompt"] == "To install the package, run"
    [run_id] = open_user_store(user_db).experiments("steering")["id"]
    record = open_user_store(user_db).experiment(run_id)["record"]
    link = {key: app.query_params[key] for key in ("steer", "method", "prompt")}
    reopened = page(STEER, **link, run=run_id)
    assert not reopened.exception and not reopened.error
    assert by_label(reopened.text_area, "Prompt").value == "To install the package, run"
    assert any(m.value.startswith(f"Run {run_id[:8]}") for m in reopened.markdown)
    steered_html = html_bodies(reopened)
    assert all(html.escape(token) in steered_html for token in record["steered"]["tokens"] if token.strip())
    assert reopened.query_params["run"] == run_id


@pytest.mark.slow
def test_the_cli_and_the_dashboard_name_the_same_first_difference(user_db):
    """One run (same prompt, feature, settings and seed) through ``saescope steer`` and the Steer page:
    both say the first difference is at the same 1-based generated token."""
    prompt, feature = "To install the package, run", "resid-L2:938:25"
    cli = subprocess.run(
        [sys.executable, "-m", "analysis", "steer", "--prompt", prompt, "--feature", feature, "--max-new-tokens", "12"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stderr
    said = re.search(r"first difference at generated token (\d+) of 12 \(counting from 1", cli.stdout)
    assert said, cli.stdout
    app = page(STEER, steer=feature)
    app.session_state["steer_prompt"] = prompt
    app.session_state["steer_max_new_tokens"] = 12
    generate(app)
    heading = next(m.value for m in app.markdown if "Next-token distribution at the first difference" in m.value)
    assert f"(generated token {said[1]}, counting from 1)" in heading
    store = open_user_store(user_db)
    record = store.experiment(str(store.experiments("steering")["id"].iloc[0]))["record"]
    assert record["divergence"]["index"] + 1 == int(said[1])
