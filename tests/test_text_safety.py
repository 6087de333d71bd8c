"""Text is text on every page (Streamlit's AppTest, real atlas and user-data files): markdown typed by
a reviewer, written into an atlas or put into a URL is shown literally (no bold, no image fetched,
no heading or table), bidi overrides and zero-width characters are made visible in every text and
table, CSV exports carry no formula, and out-of-range URL values get a message, never a traceback.

What a reader sees is checked the way a browser would build it: every markdown source the app sends
(bodies, captions, alerts, headings, metric labels and values, widget labels) is rendered with
markdown-it (CommonMark plus GitHub's tables and strikethrough)."""

from __future__ import annotations

import html
import json
import re
import shutil
from io import StringIO
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from analysis.paths import DEMO_DIR
from dashboard.userdata import open_user_store
from tests.dashboard_app import HOME as HOME_SCRIPT
from tests.dashboard_app import by_label

HOME, FEATURES, FEATURE, TRIAGE = None, "pages/1_Features.py", "pages/2_Feature.py", "pages/3_Triage.py"
LISTS, STEER, SEARCH, GRAPH = "pages/4_Lists.py", "pages/5_Steer.py", "pages/6_Search_by_text.py", "pages/7_Graph.py"
EVERY_PAGE = [HOME, FEATURES, FEATURE, TRIAGE, LISTS, STEER, SEARCH, GRAPH]
LIVE_PAGES = [STEER, SEARCH, GRAPH]

MARKDOWN = "**Admin** ![b](http://127.0.0.1:9/x.png)"
BLOCKS = "# Heading\n| a | b |\n|---|---|\n| 1 | 2 |\n- item"
BIDI = "\u202eevil\u200b\u2066x\u2069\ufeff\u2060"  # shows as "live" where overrides are obeyed
BIDI_SHOWN = "⟨U+202E⟩evil⟨U+200B⟩⟨U+2066⟩x⟨U+2069⟩⟨U+FEFF⟩⟨U+2060⟩"
FORMULA = "=cmd|' /C calc'!A0"
INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\u200b-\u200d\ufeff\u2060]")
RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _nodes(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def markdown_sources(app) -> list[str]:
    """Every string the app sends that the browser renders as markdown."""
    sources = []
    for node in _nodes(app._tree):
        proto = getattr(node, "proto", None)
        if proto is None or proto.DESCRIPTOR.name == "Html":
            continue
        fields = proto.DESCRIPTOR.fields_by_name
        sources += [getattr(proto, name) for name in ("body", "label") if name in fields and getattr(proto, name)]
        if proto.DESCRIPTOR.name == "Block" and proto.WhichOneof("type") == "expandable":
            sources.append(proto.expandable.label)
    return sources


def rendered_text(source: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", RENDERER.render(source)))


def frames(app) -> list[pd.DataFrame]:
    return [element.value for element in app.dataframe]


def frame_strings(app) -> list[str]:
    strings = []
    for frame in frames(app):
        for column in frame.columns:
            for value in frame[column]:
                strings += [v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str)]
    return strings


def assert_plain(app, expected: list[str]) -> None:
    """No traceback; no markdown source renders an image, a link, a heading, a table or bold
    "Admin"; no invisible character anywhere; each of ``expected`` appears literally somewhere."""
    assert not app.exception, app.exception
    sources = markdown_sources(app)
    for source in sources:
        rendered = RENDERER.render(source)
        assert not re.search(r"<img|<a |<h[1-6]|<table|<strong>Admin|<li>", rendered), (source, rendered)
    shown = [rendered_text(s) for s in sources] + frame_strings(app)
    shown += [option for widget in app.selectbox for option in widget.options]
    shown += [option for widget in app.multiselect for option in widget.options]
    for text in shown:
        assert not INVISIBLE.search(text), repr(text)
    for text in expected:
        assert any(text in s for s in shown), (text, shown)


def page(path: str | None, **query: str) -> AppTest:
    """A page run once with a query string (as tests.dashboard_app.page, with time for the live
    pages to load the demo model on a busy machine)."""
    app = AppTest.from_file(HOME_SCRIPT, default_timeout=300 if path in LIVE_PAGES else 60)
    if path:
        app.switch_page(path)
    for key, value in query.items():
        app.query_params[key] = value
    return app.run()


def hostile_page(path: str | None, **query: str):
    app = page(path, **query)
    assert not app.exception, app.exception
    return app


# --- URL values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_PAGE)
def test_an_unknown_atlas_in_the_url_is_echoed_as_text_on_every_page(user_db, path):
    app = hostile_page(path, atlas=MARKDOWN + BIDI)
    assert_plain(app, [f"Unknown atlas '{MARKDOWN}{BIDI_SHOWN}'"])


@pytest.mark.parametrize(
    "path, query, shown",
    [
        (FEATURE, {"sae": MARKDOWN, "latent": BLOCKS}, [f"got sae='{MARKDOWN}'", "latent='# Heading↵| a | b |"]),
        (STEER, {"steer": MARKDOWN + ":3"}, [f"no such feature: {MARKDOWN}:3"]),
        (GRAPH, {"max_density": MARKDOWN}, [f"max density: '{MARKDOWN}' is not a number"]),
    ],
)
def test_url_values_echoed_in_messages_are_text(user_db, path, query, shown):
    assert_plain(hostile_page(path, **query), shown)


def test_a_typed_filter_value_is_echoed_as_text(user_db):
    app = hostile_page(FEATURES)
    by_label(app.text_input, "Density at least").set_value(MARKDOWN).run()
    assert_plain(app, [f"Density at least: '{MARKDOWN}' is not a number"])


# --- atlas metadata ------------------------------------------------------------------------------

ATLAS_STEM = "**Admin** ![b](x.png) #1"
SAE_NAME = "**L2**\u202e"


@pytest.fixture
def hostile_meta_atlas(tmp_path, monkeypatch) -> str:
    """A copy of the demo atlas whose file name, model and corpus specs, hook names and first SAE's
    name are markdown (and a bidi override); returns its catalog key."""
    folder = tmp_path / "atlases"
    folder.mkdir()
    path = folder / f"{ATLAS_STEM}.duckdb"
    shutil.copy(DEMO_DIR / "atlas.duckdb", path)
    with duckdb.connect(str(path)) as connection:
        for key in ("model", "corpus"):
            connection.execute(
                "UPDATE meta SET value = json_merge_patch(value, json_object('spec', ?)) WHERE key = ?", [MARKDOWN, key]
            )
        connection.execute("UPDATE saes SET hook_name = ?, hook_name_out = ?", [MARKDOWN, BLOCKS])
        connection.execute("UPDATE saes SET name = ? WHERE sae = 0", [SAE_NAME])
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(folder))
    return ATLAS_STEM


@pytest.mark.parametrize(
    "path, query, shown",
    [
        (HOME, {}, [f"Model: {MARKDOWN}", f"{ATLAS_STEM}.duckdb: ", f"of the {MARKDOWN} corpus", MARKDOWN]),
        (FEATURE, {"sae": SAE_NAME, "latent": "3"}, [f"reads {MARKDOWN} · writes # Heading↵", "**L2**⟨U+202E⟩"]),
        (STEER, {}, [MARKDOWN]),
        (SEARCH, {}, [MARKDOWN]),
        (GRAPH, {}, [MARKDOWN]),
        (FEATURES, {}, ["**L2**⟨U+202E⟩"]),
        (TRIAGE, {}, []),
        (LISTS, {}, []),
    ],
)
def test_atlas_metadata_is_shown_as_text(user_db, hostile_meta_atlas, path, query, shown):
    app = hostile_page(path, atlas=hostile_meta_atlas, **query)
    assert_plain(app, shown)
    if path is HOME:
        assert "**L2**⟨U+202E⟩" in list(app.dataframe[1].value["name"])


# --- what reviewers typed ------------------------------------------------------------------------


def sae_hash(name: str) -> str:
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as connection:
        return connection.execute("SELECT content_hash FROM saes WHERE name = ?", [name]).fetchall()[0][0]


@pytest.fixture
def hostile_user_data(user_db) -> Path:
    """Labels, notes, a list, its note, a reviewer name and experiment titles that are markdown,
    bidi overrides and spreadsheet formulas."""
    store = open_user_store(user_db)
    reviewer = f"**Admin** {BIDI}"
    store.annotate(sae_hash("resid-L2"), "resid-L2", 17, reviewer, status="interpretable", label=MARKDOWN)
    store.annotate(
        sae_hash("resid-L2"), "resid-L2", 17, reviewer, label=FORMULA, notes=BLOCKS + BIDI, confidence="high"
    )
    store.create_list(MARKDOWN, reviewer, description=BLOCKS + BIDI)
    store.add_to_list(MARKDOWN, sae_hash("resid-L2"), "resid-L2", 17, reviewer, note="@SUM(1+1)" + BIDI)
    store.record_experiment("steering", reviewer, MARKDOWN + BIDI, "hash", {"targets": []})
    store.record_experiment("graph", reviewer, MARKDOWN + BIDI, "hash", {"graph": {}})
    return user_db


def test_the_audit_log_table_shows_reviewers_labels_and_notes_as_text(hostile_user_data):
    app = page(FEATURE, sae="resid-L2", latent="17")
    assert not app.table, "st.table renders markdown in its cells"
    audit = app.dataframe[-1].value
    assert list(audit["reviewer"]) == [f"**Admin** {BIDI_SHOWN}"] * len(audit)
    assert MARKDOWN in list(audit["new_value"]) and FORMULA in list(audit["new_value"])
    assert "# Heading↵| a | b |↵|---|---|↵| 1 | 2 |↵- item" + BIDI_SHOWN in list(audit["new_value"])
    assert_plain(app, [f"**Admin** {BIDI_SHOWN}"])


@pytest.mark.parametrize(
    "path, query, shown",
    [
        (FEATURES, {}, [FORMULA, f"**Admin** {BIDI_SHOWN}"]),
        (FEATURES, {"q": "calc"}, [FORMULA]),
        (TRIAGE, {"feature": "resid-L2:17"}, []),
        (LISTS, {}, [MARKDOWN, "# Heading↵| a | b |", f"@SUM(1+1){BIDI_SHOWN}"]),
        (STEER, {}, [MARKDOWN + BIDI_SHOWN, f"**Admin** {BIDI_SHOWN}"]),
        (GRAPH, {}, [MARKDOWN + BIDI_SHOWN, f"**Admin** {BIDI_SHOWN}"]),
        (HOME, {}, []),
        (SEARCH, {}, []),
    ],
)
def test_what_reviewers_typed_is_text_on_every_page(hostile_user_data, path, query, shown):
    assert_plain(hostile_page(path, **query), shown)


# --- exports -------------------------------------------------------------------------------------


def test_csv_exports_carry_no_formula_and_json_exports_stay_exact(hostile_user_data, downloads):
    app = page(LISTS, list=MARKDOWN)
    assert not app.exception
    files = downloads(app)
    assert sorted(files) == sorted(
        f"{what} ({kind})" for what in ("This list", "Labels", "Audit log") for kind in ("CSV", "JSON")
    )
    for label, content in files.items():
        if label.endswith("(CSV)"):
            cells = pd.read_csv(StringIO(content.decode()), dtype=str, keep_default_na=False).to_numpy().ravel()
            risky = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
            assert not risky, (label, risky)
    labels = pd.read_csv(StringIO(files["Labels (CSV)"].decode()), dtype=str)
    assert list(labels["label"]) == ["'" + FORMULA]
    audit_csv = pd.read_csv(StringIO(files["Audit log (CSV)"].decode()), dtype=str, keep_default_na=False)
    assert "'" + FORMULA in list(audit_csv["new_value"])
    items = pd.read_csv(StringIO(files["This list (CSV)"].decode()), dtype=str)
    assert list(items["note"]) == ["'@SUM(1+1)" + BIDI]
    assert json.loads(files["Labels (JSON)"])[0]["label"] == FORMULA
    assert json.loads(files["This list (JSON)"])[0]["note"] == "@SUM(1+1)" + BIDI
    assert FORMULA in [row["new_value"] for row in json.loads(files["Audit log (JSON)"])]


# --- out-of-range and garbage URL values ---------------------------------------------------------

NOT_FOUND = "has no feature"


@pytest.mark.parametrize(
    "path, query, message",
    [
        (FEATURES, {"page": "99999999999999999999"}, None),
        (FEATURES, {"page": "-5"}, None),
        (FEATURES, {"min_density": "nan", "max_density": "inf", "min_max_act": "-1e999", "sort": "x"}, None),
        (FEATURES, {"status": "bogus", "tag": "nope", "sae": "nope", "reviewer": MARKDOWN}, None),
        (FEATURE, {"sae": "resid-L2", "latent": "99999999999999999999"}, NOT_FOUND),
        (FEATURE, {"sae": "resid-L2", "latent": "-3"}, NOT_FOUND),
        (FEATURE, {"sae": "resid-L2", "latent": "3", "width": "bogus"}, None),
        (TRIAGE, {"feature": "resid-L2:99999999"}, NOT_FOUND),
        (TRIAGE, {"feature": "resid-L2:-3"}, NOT_FOUND),
        (TRIAGE, {"feature": "resid-L2:99999999999999999999"}, NOT_FOUND),
        (LISTS, {"list": "no such list"}, None),
        (STEER, {"steer": "resid-L2:3:1e308"}, None),
        (STEER, {"steer": "resid-L2:99999999999999999999"}, "no such feature"),
        (STEER, {"steer": "resid-L2:-3", "method": "bogus"}, "no such feature"),
        (SEARCH, {"text": "x" * 30_000}, None),
        (GRAPH, {"node_threshold": "nan", "edge_threshold": "inf", "max_features": "99999999999999999999"}, None),
        (GRAPH, {"max_features": "-4", "prompt": "y" * 3000}, None),
    ],
)
def test_out_of_range_url_values_get_a_message_not_a_traceback(user_db, path, query, message):
    app = page(path, **query)
    assert not app.exception, app.exception
    if message:
        assert any(message in e.value for e in app.error), [e.value for e in app.error]


def test_a_triage_link_to_a_missing_feature_says_which_and_offers_the_queue(user_db):
    app = page(TRIAGE, feature="resid-L2:-3")
    assert [e.value for e in app.error] == ["resid-L2 has no feature -3: its features are numbered 0 to 1023."]
    assert [link.proto.label for link in app.get("page_link")] == ["Start the queue at its first unreviewed feature"]
