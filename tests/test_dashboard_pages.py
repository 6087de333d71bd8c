"""Every dashboard page through Streamlit's AppTest on the demo atlas: filter, open a feature, label
it, undo, lists and exports, read-only mode, bad links and hostile text."""

from __future__ import annotations

import getpass
import html
import json
import re

import duckdb
import pandas as pd
import pytest

from analysis.paths import DEMO_DIR
from dashboard.browse.exports import as_csv, as_json
from dashboard.userdata import open_user_store
from tests.dashboard_app import (
    HOSTILE_LABEL,
    HOSTILE_TOKEN,
    HOSTILE_TOKEN_2,
    by_label,
    html_bodies,
    make_hostile_atlas,
    page,
)

FEATURES, FEATURE, TRIAGE, LISTS = "pages/1_Features.py", "pages/2_Feature.py", "pages/3_Triage.py", "pages/4_Lists.py"


def atlas_sql(query: str, params: list | None = None):
    connection = duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True)
    try:
        return connection.execute(query, params or []).fetchall()
    finally:
        connection.close()


def sae_hash(name: str) -> str:
    return atlas_sql("SELECT content_hash FROM saes WHERE name = ?", [name])[0][0]


def test_filtering_the_feature_table_runs_in_sql_and_lands_in_the_url(user_db):
    app = page(FEATURES)
    by_label(app.multiselect, "SAE / layer").set_value(["transcoder-L1"])
    by_label(app.text_input, "Density at least").set_value("1e-3")
    by_label(app.selectbox, "Sort by").set_value("density, highest first")
    app.run()
    assert not app.exception
    expected = atlas_sql(
        "SELECT latent, density FROM features WHERE sae = 2 AND density >= 1e-3 ORDER BY density DESC, latent"
    )
    shown = app.dataframe[0].value
    assert list(shown["sae_name"].unique()) == ["transcoder-L1"]
    assert list(shown["latent"]) == [latent for latent, _ in expected[:50]]
    assert f"{len(expected):,} features match" in app.caption[0].value
    assert app.query_params["sae"] == "transcoder-L1" and app.query_params["min_density"] == "0.001"
    assert app.query_params["sort"] == "density, highest first"


def test_the_table_starts_with_live_labelled_features_and_shows_every_byte_readably(user_db):
    app = page(FEATURES)
    first = app.dataframe[0].value
    dead_or_blank = atlas_sql("SELECT count(*) FROM features WHERE sae = 0 AND latent < 50 AND label = ''")[0][0]
    assert dead_or_blank > 0  # the demo's first features include dead ones, which the default order puts last
    assert "sort" not in app.query_params and len(first) == 50
    assert all(first["auto_label"] != "") and list(first["sae_name"].unique()) == ["resid-L2"]
    assert first["latent"].is_monotonic_increasing
    fired = {
        latent: (count, density)
        for latent, count, density in atlas_sql("SELECT latent, fire_count, density FROM features WHERE sae = 0")
    }
    assert all(fired[latent][0] >= 20 and fired[latent][1] <= 0.1 for latent in first["latent"])
    assert fired[9][0] < 20 and 9 not in list(first["latent"])  # fired once: after those with examples to read
    assert not {w.label for w in app.text_input} & {"Reviewer"} and by_label(app.text_input, "Last edited by")

    by_label(app.selectbox, "Sort by").set_value("feature")
    app.run()
    labels = list(app.dataframe[0].value["auto_label"])
    stored = dict(atlas_sql("SELECT latent, label FROM features WHERE sae = 0 AND latent < 50"))
    assert "\\x16" in stored[31] and "\ufffd" in stored[31]  # as the atlas keeps it: escapes and U+FFFD
    assert labels[31] == "fires on ' fac' · promotes '⟨U+0016⟩', '⟨0xC8⟩', '⟨U+001B⟩'"
    assert labels[15] == "fires on ' Mod', '⟨0xE5⟩⟨0xB0⟩', '>' · promotes '⟨0xA1⟩有', '⟨0xC1⟩', 'ohns'"
    assert not any("\\x" in label or "\ufffd" in label for label in labels)


def test_a_link_reproduces_the_filtered_view(user_db):
    app = page(FEATURES, q="the", max_density="0.5", page="2")
    labels = atlas_sql("SELECT label FROM features WHERE density <= 0.5")
    expected = sum(any(word.startswith("the") for word in label_words(label)) for (label,) in labels)
    assert by_label(app.text_input, "Label or note").value == "the"
    assert f"{expected:,} features match" in app.caption[0].value
    assert by_label(app.number_input, f"Page (of {-(-expected // 50)})").value == 2


def label_words(label: str) -> list[str]:
    """The searchable words of an automatic label: its tokens' words, not the template's."""
    return re.findall(r"\w+", re.sub(r"^fires on | · promotes ", " ", label).lower())


def test_the_table_finds_features_by_token_and_by_reviewer_annotations(user_db):
    store = open_user_store(user_db)
    store.annotate(
        sae_hash("transcoder-L2"),
        "transcoder-L2",
        40,
        "erin",
        status="polysemantic",
        notes="Mixes 100% of_the dates",
        tags=["bias"],
    )
    by_note = page(FEATURES, q="100% of_")
    assert list(by_note.dataframe[0].value["latent"]) == [40]
    by_status = page(FEATURES, status="polysemantic", tag="bias", reviewer="erin")
    assert list(by_status.dataframe[0].value["latent"]) == [40]
    the = atlas_sql("SELECT token FROM tokens WHERE text = ' the'")[0][0]
    expected = atlas_sql(
        "SELECT count(*) FROM features WHERE list_contains(top_tokens, ?) OR list_contains(top_logit_tokens, ?)",
        [the, the],
    )[0][0]
    assert f"{expected:,} features match" in page(FEATURES, token=" the").caption[0].value


def test_opening_a_feature_from_the_table_shows_its_examples_and_statistics(user_db):
    app = page(FEATURES)
    form_sae = [w for w in app.selectbox if w.label == "SAE"][0]
    form_sae.set_value("transcoder-L2")
    by_label(app.number_input, "Feature number").set_value(7)
    by_label(app.button, "Open feature").click().run()
    assert not app.exception
    assert app.query_params["sae"] == "transcoder-L2" and app.query_params["latent"] == "7"
    density, max_act = atlas_sql("SELECT density, max_act FROM features WHERE sae = 3 AND latent = 7")[0]
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Density"] == f"{density:.3e}" and metrics["Max activation"] == f"{max_act:.3f}"
    top = atlas_sql("SELECT count(*) FROM examples WHERE sae = 3 AND latent = 7 AND kind = 'top'")[0][0]
    assert any(s.value == f"Top {top} examples" for s in app.subheader)


def test_examples_read_as_the_text_they_were_with_real_spaces(user_db):
    """The first example of resid-L2 #938 is a slice of its window's text: spaces are spaces (not ·),
    a newline is ↵ and a line break, the leading … is glued to the first token."""
    window = atlas_sql(
        "SELECT w.tokens FROM examples e JOIN windows w USING (window_id) "
        "WHERE e.sae = 0 AND e.latent = 938 AND e.kind = 'top' AND e.rank = 0"
    )[0][0]
    texts = dict(atlas_sql("SELECT token, text FROM tokens"))
    whole = "".join(texts[t] for t in window[1:]).replace("\n", "↵\n")
    app = page(FEATURE, sae="resid-L2", latent="938")
    lines = re.findall(r'overflow-wrap: break-word;">(.*?)</div>', html_bodies(app))
    spans = re.findall(r'<span style="[^"]*white-space: pre-wrap;[^"]*" title="[^"]*">(.*?)</span>', lines[0])
    shown = html.unescape("".join(spans))
    assert len(spans) > 10 and " " in shown and "·" not in shown and shown in whole
    assert lines[0].startswith("…<span")


def test_labelling_a_feature_is_audited_and_undo_restores_it(user_db):
    app = page(FEATURE, user="alice", sae="resid-L2", latent="17")
    by_label(app.radio, "Status").set_value("interpretable")
    by_label(app.text_input, "Label").set_value("the verb 'put' / 'let'")
    by_label(app.multiselect, "Tags").set_value(["spurious-correlation"])
    by_label(app.button, "Save").click().run()
    assert not app.exception and not app.error
    store = open_user_store(user_db)
    saved = store.annotation(sae_hash("resid-L2"), 17)
    assert (saved.status, saved.label, saved.tags, saved.reviewer) == (
        "interpretable",
        "the verb 'put' / 'let'",
        ("spurious-correlation",),
        "alice",
    )
    audit = app.dataframe[-1].value
    assert set(audit["field"]) == {"status", "label", "tags"} and set(audit["reviewer"]) == {"alice"}
    assert by_label(app.radio, "Status").value == "interpretable"

    by_label(app.button, "Undo my last change").click().run()
    restored = store.annotation(sae_hash("resid-L2"), 17)
    assert (restored.status, restored.label, restored.tags) == ("unreviewed", "", ())
    history = store.history(sae_hash("resid-L2"), 17)
    assert list(history["action"]).count("undo") == 3 and list(history["action"]).count("edit") == 3


def test_with_no_sign_in_configured_edits_are_the_local_users_and_nobody_types_a_name(user_db):
    app = page(FEATURE, sae="resid-L2", latent="3")
    assert not [w for w in app.text_input if w.label == "Reviewer"]
    by_label(app.text_input, "Label").set_value("mine")
    by_label(app.button, "Save").click().run()
    assert not app.exception and not app.error
    local = open_user_store(user_db).annotation(sae_hash("resid-L2"), 3).reviewer
    assert local == getpass.getuser() and any(f"Signed in as {local}" in t.value for t in app.text)


def _triage_feature(app) -> tuple[str, int]:
    name, _, latent = app.query_params["feature"].rpartition(":")
    return name, int(latent)


def test_triage_walks_the_unreviewed_queue_and_counts_progress(user_db):
    app = page(TRIAGE, user="bob", sae="transcoder-L0", min_density="0.01")
    queue = atlas_sql("SELECT latent FROM features WHERE sae = 1 AND density >= 0.01 ORDER BY latent")
    assert _triage_feature(app) == ("transcoder-L0", queue[0][0])
    by_label(app.radio, "Status").set_value("polysemantic")
    by_label(app.button, "Save and next").click().run()
    assert _triage_feature(app) == ("transcoder-L0", queue[1][0])
    assert app.get("progress")[0].proto.text == f"1 of {len(queue)} reviewed"
    by_label(app.button, "Skip").click().run()
    assert _triage_feature(app) == ("transcoder-L0", queue[2][0])
    assert open_user_store(user_db).annotation(sae_hash("transcoder-L0"), queue[0][0]).status == "polysemantic"
    by_label(app.button, "Back").click().run()  # back to the skipped one, then to the saved one
    assert _triage_feature(app) == ("transcoder-L0", queue[1][0])
    by_label(app.button, "Back").click().run()
    assert _triage_feature(app) == ("transcoder-L0", queue[0][0]) and by_label(app.button, "Back").disabled
    assert by_label(app.radio, "Status").value == "polysemantic"


def test_a_triage_link_reopens_the_same_queue_at_the_same_feature(user_db):
    """The queue's filter (sae=) and the feature in view (feature=) are apart: a link made while
    walking a queue over every SAE reopens that queue, counted the same, at the same feature."""
    app = page(TRIAGE, user="bob", min_density="0.001")
    for _ in range(3):
        by_label(app.button, "Uninterpretable").click().run()  # its key is 3: save as that, next
    progress, feature = app.get("progress")[0].proto.text, _triage_feature(app)
    live = atlas_sql("SELECT count(*) FROM features WHERE density >= 0.001")[0][0]
    assert progress == f"3 of {live:,} reviewed" and "sae" not in app.query_params
    assert not [w for w in app.text_input if w.label == "Reviewer"]  # who you are is the sign-in, not a field
    assert by_label(app.text_input, "Last edited by").value == ""  # the filter says what it filters
    reopened = page(TRIAGE, user="bob", **dict(app.query_params))
    assert reopened.get("progress")[0].proto.text == progress and _triage_feature(reopened) == feature
    assert reopened.subheader[0].value == f"{feature[0]} · feature {feature[1]}"
    # and a queue of one SAE, opened at a feature of it, stays that queue
    one = page(TRIAGE, user="bob", sae="transcoder-L1", feature="transcoder-L1:40")
    count = atlas_sql("SELECT count(*) FROM features WHERE sae = 2 AND density > 0")[0][0]
    assert one.get("progress")[0].proto.text == f"0 of {count:,} reviewed"
    assert _triage_feature(one) == ("transcoder-L1", 40) and one.query_params["sae"] == "transcoder-L1"


def test_the_triage_queue_skips_dead_features_unless_asked(user_db):
    app = page(TRIAGE, user="bob", sae="resid-L2")
    dead = atlas_sql("SELECT latent FROM features WHERE sae = 0 AND density = 0 ORDER BY latent")
    live = atlas_sql("SELECT latent FROM features WHERE sae = 0 AND density > 0 ORDER BY latent")
    assert dead[0][0] == 0 and _triage_feature(app) == ("resid-L2", live[0][0])
    assert app.get("progress")[0].proto.text == f"0 of {len(live):,} reviewed"
    by_label(app.toggle, "Include dead features").set_value(True).run()
    assert _triage_feature(app) == ("resid-L2", 0) and app.query_params["dead"] == "1"
    assert app.get("progress")[0].proto.text == f"0 of {len(live) + len(dead):,} reviewed"
    assert (
        page(TRIAGE, user="bob", sae="resid-L2", dead="1")
        .get("progress")[0]
        .proto.text.endswith(f"of {len(live) + len(dead):,} reviewed")
    )


def test_undo_after_save_and_next_undoes_that_save_and_goes_back_to_it(user_db):
    app = page(TRIAGE, user="bob", sae="transcoder-L0")
    first = _triage_feature(app)
    by_label(app.text_input, "Label").set_value("commas in lists")
    by_label(app.button, "Interpretable").click().run()
    assert _triage_feature(app) != first
    store = open_user_store(user_db)
    assert store.annotation(sae_hash("transcoder-L0"), first[1]).label == "commas in lists"
    by_label(app.button, "Undo my last change").click().run()
    assert not app.exception and _triage_feature(app) == first
    undone = store.annotation(sae_hash("transcoder-L0"), first[1])
    assert (undone.status, undone.label) == ("unreviewed", "")
    assert by_label(app.text_input, "Label").value == "" and by_label(app.radio, "Status").value == "unreviewed"
    assert [s.value for s in app.success] == [f"Undid your last change, on transcoder-L0:{first[1]}."]
    by_label(app.button, "Undo my last change").click().run()  # nothing of bob's is left to undo
    assert _triage_feature(app) == first and store.annotation(sae_hash("transcoder-L0"), first[1]).label == ""


def test_lists_collect_features_and_export_with_labels_density_and_links(user_db, downloads):
    app = page(LISTS, user="carol")
    by_label(app.text_input, "New list name").set_value("deception-candidates")
    by_label(app.button, "Create list").click().run()
    assert not app.exception and app.query_params["list"] == "deception-candidates"
    open_user_store(user_db).create_list("later", "carol")
    feature = page(FEATURE, user="carol", sae="transcoder-L3", latent="11")
    assert any(c.value == "In no list yet." for c in feature.caption)
    by_label(feature.selectbox, "List").set_value("deception-candidates")
    by_label(feature.text_input, "Note on this feature").set_value("check with the red team")
    by_label(feature.button, "Add to list").click().run()
    assert not feature.exception and not feature.error
    assert by_label(feature.text_input, "Note on this feature").value == ""  # emptied after a successful add
    assert any(m.value == "In lists: deception-candidates" for m in feature.markdown)
    assert by_label(feature.selectbox, "List").options == ["later"]  # the lists it is not in yet
    store = open_user_store(user_db)
    store.annotate(
        sae_hash("transcoder-L3"), "transcoder-L3", 11, "carol", status="interpretable", tags=["deception", "pii"]
    )
    items = store.list_frame("deception-candidates")
    rows = items.to_dict("records")
    assert [row["latent"] for row in rows] == [11] and rows[0]["note"] == "check with the red team"
    exported = json.loads(as_json(items))
    assert exported[0]["tags"] == ["deception", "pii"] and exported[0]["status"] == "interpretable"
    from io import StringIO

    assert json.loads(pd.read_csv(StringIO(as_csv(items).decode())).to_dict("records")[0]["tags"]) == [
        "deception",
        "pii",
    ]
    lists_page = page(LISTS, user="carol", list="deception-candidates")
    shown = lists_page.dataframe[-1].value
    density, label = atlas_sql("SELECT density, label FROM features WHERE sae = 4 AND latent = 11")[0]
    assert list(shown["latent"]) == [11] and list(shown["density"]) == [density]
    assert "\ufffd" in label  # stored with U+FFFD for bytes that are not a character alone; shown as the bytes
    assert list(shown["automatic_label"]) == ["fires on '.' · promotes '⟨0xDE⟩', '⟨0x83⟩⟨0xBD⟩', ' compon'"]
    assert list(shown["link"]) == ["Feature?atlas=demo&sae=transcoder-L3&latent=11"]
    buttons = lists_page.get("download_button")
    assert [(b.proto.label, b.proto.icon) for b in buttons] == [
        ("CSV", ":material/table:"),
        ("JSON", ":material/data_object:"),
    ] * 3
    exported = json.loads(downloads(lists_page)["This list (JSON)"])[0]
    assert (exported["link"], exported["density"], exported["automatic_label"]) == (
        "Feature?atlas=demo&sae=transcoder-L3&latent=11",  # AppTest has no browser URL; a browser's is absolute
        density,
        shown["automatic_label"][0],
    )


def test_read_only_mode_shows_annotations_as_text_after_the_feature_and_no_form(user_db, monkeypatch):
    store = open_user_store(user_db)
    store.annotate(sae_hash("resid-L2"), "resid-L2", 17, "erin", status="interpretable", label="put / let")
    store.create_list("verbs", "erin")
    store.add_to_list("verbs", sae_hash("resid-L2"), "resid-L2", 17, "erin")
    store.close()
    monkeypatch.setenv("SAESCOPE_READ_ONLY", "1")
    app = page(FEATURE, user="dave", sae="resid-L2", latent="17")
    assert any("Read-only mode" in i.value for i in app.info)
    assert not app.radio and not [b for b in app.button if b.label in ("Save", "Undo my last change", "Add to list")]
    assert not [w for w in app.text_input if w.label in ("Reviewer", "Label", "Note on this feature")]
    headings = [s.value for s in app.subheader]
    assert "Triage" not in headings
    assert headings.index("Logit effects") < headings.index("Lists") < headings.index("Annotation")
    shown = [m.value for m in app.markdown]
    assert "**Status:** interpretable  \n**Label:** put / let" in shown and "In lists: verbs" in shown


@pytest.mark.parametrize(
    "query, message",
    [
        ({"sae": "no-such-sae", "latent": "3"}, "the link needs sae="),
        ({"sae": "resid-L2", "latent": "99999"}, "resid-L2 has no feature 99999: its features are numbered 0 to 1023"),
        ({"sae": "resid-L2", "latent": "seventeen"}, "the link needs sae="),
        ({"atlas": "nowhere", "sae": "resid-L2", "latent": "1"}, "Unknown atlas 'nowhere'"),
    ],
)
def test_a_bad_feature_link_gets_a_clear_message(user_db, query, message):
    app = page(FEATURE, **query)
    assert not app.exception
    assert any(message in e.value for e in app.error), [e.value for e in app.error]


def test_a_corrupt_atlas_in_the_folder_is_refused_clearly(user_db, tmp_path, monkeypatch):
    (tmp_path / "broken.duckdb").write_bytes(b"not a database" * 100)
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path))
    app = page(FEATURES, atlas="broken")
    assert not app.exception
    assert any("not a readable DuckDB file" in e.value for e in app.error)


def test_hostile_tokens_and_labels_render_as_escaped_text(user_db, tmp_path, monkeypatch):
    make_hostile_atlas(tmp_path / "atlases")
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    app = page(FEATURE, atlas="hostile", sae="resid-L2", latent="17")
    assert not app.exception
    bodies = html_bodies(app)
    assert "<img" not in bodies and "<script" not in bodies
    assert "&lt;img src=x onerror=alert(1)&gt;" in bodies  # spaces are spaces, the markup is text
    assert "&lt;script&gt;alert(&#x27;label&#x27;)&lt;/script&gt; &amp; &quot;" in bodies
    assert "⟨U+202E⟩⟨U+0007⟩&lt;/div&gt;&lt;script&gt;" in bodies
    assert HOSTILE_TOKEN not in bodies and HOSTILE_TOKEN_2 not in bodies and HOSTILE_LABEL not in bodies


def test_at_the_end_of_the_queue_undo_and_back_still_reach_the_last_feature(user_db):
    app = page(TRIAGE, user="bob", sae="resid-L2", min_density="0.5")
    queue = atlas_sql("SELECT latent FROM features WHERE sae = 0 AND density >= 0.5 ORDER BY latent")
    assert len(queue) == 2
    for _ in queue:
        by_label(app.button, "Dead").click().run()
    assert [s.value for s in app.success] == ["Every feature in this queue has been reviewed."]
    assert "feature" not in app.query_params
    by_label(app.button, "Back").click().run()
    assert _triage_feature(app) == ("resid-L2", queue[-1][0])
    by_label(app.button, "Skip").click().run()  # the queue is done again
    by_label(app.button, "Undo my last change").click().run()
    assert _triage_feature(app) == ("resid-L2", queue[-1][0]) and app.get("progress")[0].proto.text == "1 of 2 reviewed"
