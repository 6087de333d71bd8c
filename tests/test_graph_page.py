"""The Graph page through Streamlit's AppTest on the demo bundle: real model, real transcoders,
real circuit-tracer, real user-data file."""

from __future__ import annotations

import json
import re

import pytest

from analysis.graphs import compute_graph, to_networkx
from analysis.graphs.intervention import intervene
from dashboard.graph.files import node_link_json
from dashboard.graph.state import GraphState
from dashboard.shell.plain_text import visible
from dashboard.userdata import open_user_store
from tests.dashboard_app import by_label, make_atlas_of_saes, page

pytestmark = pytest.mark.model

GRAPH = "pages/7_Graph.py"
PROMPT = "And God said, Let there be light"


def compute(app, prompt: str | None = None, mode: str | None = None, token: str = "", versus: str = ""):
    """Type into the prompt form and press Compute graph."""
    if prompt is not None:
        by_label(app.text_area, "Prompt").set_value(prompt)
    if mode is not None:
        by_label(app.radio, "Target").set_value(mode)
        by_label(app.text_input, "token").set_value(token)
        by_label(app.text_input, "versus").set_value(versus)
    by_label(app.button, "Compute graph").click().run()
    assert not app.exception, app.exception
    return app


def node_count(app) -> int:
    caption = next(c.value for c in app.caption if "nodes and" in c.value)
    return int(caption.split(" nodes")[0])


def figure(app) -> str:
    """The figure the page's chart draws (the data its browser component gets, as JSON)."""
    [chart] = [e for e in app.get("bidi_component") if e.proto.component_name == "saescope_graph_chart"]
    return json.dumps(json.loads(chart.proto.json)["figure"])


def drawn_nodes(app, kind: str) -> list[str]:
    return next(trace["customdata"] for trace in json.loads(figure(app))["data"] if trace.get("name") == kind)


def click(app, node: str):
    """Select a drawn node, as a click on it does (the real click at its pixel position, in the
    browser's own event, is checked in test_browser_graph.py: AppTest runs no component script)."""
    assert any(node in (trace.get("customdata") or []) for trace in json.loads(figure(app))["data"]), node
    app.session_state["graph_node"] = node
    app.run()
    assert not app.exception, app.exception
    return app


def test_a_prompt_in_the_link_is_computed_with_scores_and_drawn(user_db):
    app = page(GRAPH, prompt=PROMPT, token=" light")
    assert not app.exception and not app.error
    metrics = {m.label: float(m.value) for m in app.metric}
    assert set(metrics) == {
        "replacement (full)",
        "replacement (pruned)",
        "completeness (full)",
        "completeness (pruned)",
    }
    assert all(0 < value <= 1 for value in metrics.values())
    spec = json.loads(figure(app))
    node_ids = [node for trace in spec["data"] if "customdata" in trace for node in trace["customdata"]]
    hovers = [text for trace in spec["data"] if trace.get("name") == "logit" for text in trace["hovertext"]]
    assert len(hovers) == 1 and hovers[0].startswith("logit ·light"), "the one chosen target token"
    assert any(n.startswith("feature/") for n in node_ids) and any(n.startswith("embed@") for n in node_ids)
    layers = spec["layout"]["yaxis"]["ticktext"]
    assert layers[0] == "embeddings" and layers[-1] == "logits"
    assert app.query_params["prompt"] == PROMPT and app.query_params["token"] == " light"
    assert app.query_params["node_threshold"] == "0.8" and app.query_params["edge_threshold"] == "0.98"


def test_clicking_a_feature_opens_its_top_examples_and_a_link_to_its_page(user_db):
    app = page(GRAPH, prompt=PROMPT)
    feature = drawn_nodes(app, "feature")[0]
    _, layer, rest = feature.split("/")
    latent = rest.split("@")[0]
    click(app, feature)
    assert app.session_state["graph_node"] == feature
    assert [s.value for s in app.subheader][0] == "Top 20 examples"
    [examples] = [e for e in app.expander if e.label == "Top examples"]
    assert not examples.proto.expanded, "examples start collapsed, so the pin and label editors stay in view"
    link = next(element for element in app.get("page_link") if element.proto.label == "Open the feature page")
    assert f"sae=transcoder-L{layer}" in link.proto.query_string and f"latent={latent}" in link.proto.query_string


def test_a_higher_node_threshold_never_shows_fewer_nodes(user_db):
    app = compute(page(GRAPH), PROMPT)
    sizes = []
    for threshold in (0.5, 0.8, 0.95):
        by_label(app.slider, "node threshold").set_value(threshold).run()
        assert not app.exception
        sizes.append(node_count(app))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert app.query_params["node_threshold"] == "0.95"


def test_max_feature_nodes_and_density_hide_features_and_say_how_many(user_db):
    app = compute(page(GRAPH), PROMPT)
    by_label(app.number_input, "max feature nodes").set_value(5).run()
    caption = next(c.value for c in app.caption if "nodes and" in c.value)
    assert re.search(r"5 of \d+ feature nodes drawn \(\d+ hidden beyond the 5 most influential\)", caption), caption
    by_label(app.number_input, "max feature nodes").set_value(200).run()
    by_label(app.text_input, "max density").set_value("0.001").run()
    caption = next(c.value for c in app.caption if "nodes and" in c.value)
    assert re.search(r"\d+ denser than 0.001", caption), caption


def test_a_hostile_prompt_is_drawn_as_text(user_db):
    app = compute(page(GRAPH), "<script>alert(1)</script><img src=x onerror=alert(2)>")
    spec = json.loads(figure(app))
    notes = spec["layout"]["annotations"]
    ticks = "".join(note["text"] for note in notes if note.get("yref") == "paper")
    assert "<" not in ticks and "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img·src=x·onerror" in ticks, ticks
    assert not any("<" in note.get("hovertext", "") for note in notes)
    hovers = [text for trace in spec["data"] for text in trace.get("hovertext") or []]
    assert hovers and not any("<" in text.replace("<br>", "") for text in hovers)
    assert not any("<" in note["text"] for note in notes)


@pytest.mark.parametrize(
    ("prompt", "mode", "token", "message"),
    [
        ("   ", None, "", "the prompt is empty"),
        (" light" * 65, None, "", "the prompt is 65 tokens; graphs take at most 64"),
        (PROMPT, "a chosen token", " lightxyzzy", "is not one token"),
        (PROMPT, "logit difference", " light", "needs the second token"),
    ],
)
def test_bad_input_gets_a_clear_message_and_no_graph(user_db, prompt, mode, token, message):
    app = compute(page(GRAPH), prompt, mode, token)
    assert any(message in e.value for e in app.error), [e.value for e in app.error]
    assert not app.get("bidi_component")


def test_an_atlas_without_a_transcoder_per_layer_says_what_is_missing_and_how_to_add_them(
    user_db, tmp_path, monkeypatch
):
    make_atlas_of_saes(tmp_path / "atlases", "plain", ["resid-L2"])
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    app = page(GRAPH, atlas="plain", prompt=PROMPT)
    assert not app.exception and not app.error
    warning = " ".join(w.value for w in app.warning)
    assert "layers [0, 1, 2, 3] of 4 have none" in warning and "python -m analysis precompute" in warning
    assert not app.get("bidi_component") and not [b for b in app.button if b.label == "Compute graph"]


def pin(app, node: str):
    click(app, node)
    by_label(app.button, "Pin to subgraph").click().run()
    assert not app.exception, app.exception
    return app


def pin_two_into_a_supernode(app, name: str = "light words") -> list[str]:
    pinned = drawn_nodes(app, "feature")[:2]
    for node in pinned:
        pin(app, node)
    by_label(app.text_input, "Supernode name").set_value(name)
    by_label(app.multiselect, "Pinned nodes to group").set_value(pinned)
    by_label(app.button, "Group").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    return pinned


def test_pinned_nodes_grouped_into_a_supernode_with_a_label_make_the_subgraph(user_db):
    app = page(GRAPH, prompt=PROMPT)
    first, second = pin_two_into_a_supernode(app)
    click(app, first)
    by_label(app.text_input, "Your label").set_value("<i>light</i> words")
    by_label(app.button, "Set label").click().run()
    assert any("Supernode light words" in m.value for m in app.markdown)
    by_label(app.toggle, SUBGRAPH).set_value(True).run()
    assert not app.exception
    spec = json.loads(figure(app))
    drawn = {trace["name"]: trace["customdata"] for trace in spec["data"] if "customdata" in trace}
    assert set(drawn) == {"supernode", "logit"}, "both pinned nodes are inside the supernode"
    assert drawn["supernode"] == ["supernode/light words"] and len(drawn["logit"]) == 10, "the targets stay"
    hover = next(trace["hovertext"][0] for trace in spec["data"] if trace.get("name") == "supernode")
    assert "supernode of 2" in hover
    assert "light words" in [note["text"] for note in spec["layout"]["annotations"]], "its name on the canvas"
    assert app.session_state["graph_state"].labels == {first: "<i>light</i> words"}


SUBGRAPH = "Subgraph only (pinned nodes, supernodes and logits)"


def view_of(app) -> tuple:
    """What the reader sees of the graph: each trace's nodes, the canvas's text, the selected node."""
    spec = json.loads(figure(app))
    traces = [(trace.get("name"), trace.get("customdata")) for trace in spec["data"] if trace.get("customdata")]
    return traces, [note["text"] for note in spec["layout"]["annotations"]], app.session_state["graph_node"]


def test_reopening_the_pages_url_shows_the_same_pins_supernode_labels_and_selection(user_db):
    app = page(GRAPH, prompt=PROMPT)
    first, second = pin_two_into_a_supernode(app, name='light, "words"')
    third = drawn_nodes(app, "feature")[2]
    pin(app, third)
    by_label(app.text_input, "Your label").set_value("a <b>third</b> one")
    by_label(app.button, "Set label").click().run()
    by_label(app.toggle, SUBGRAPH).set_value(True).run()
    click(app, 'supernode/light, "words"')
    link = {key: app.query_params[key] for key in app.query_params}
    assert json.loads(link["supernodes"]) == [['light, "words"', first, second]]
    assert link["pinnedIds"] == f"{first},{second},{third}" and link["subgraph"] == "1"

    fresh = page(GRAPH, **link)  # a new session, as a pasted link opens
    assert not fresh.exception and not fresh.error
    assert view_of(fresh) == view_of(app)
    assert "a &lt;b&gt;third&lt;/b&gt; one" in view_of(fresh)[1], "the reader's label on the canvas, as text"
    assert fresh.session_state["graph_state"].to_dict() == app.session_state["graph_state"].to_dict()


def test_a_clicked_node_lists_its_strongest_inputs_and_outputs_and_a_row_goes_there(user_db, live, demo_dir):
    graph = to_networkx(compute_graph(live, PROMPT), atlas=demo_dir / "atlas.duckdb")
    app = page(GRAPH, prompt=PROMPT)
    node = max(drawn_nodes(app, "feature"), key=lambda n: min(graph.in_degree(n), graph.out_degree(n)))
    click(app, node)
    tables = {frame.proto.id: frame.value for frame in app.dataframe if "weight" in frame.value.columns}
    inputs, outputs = (next(v for k, v in tables.items() if part in k) for part in ("graph_in_", "graph_out_"))
    strongest_in = sorted(graph.in_edges(node, data="weight"), key=lambda e: -abs(e[2]))[:8]
    assert list(inputs["weight"]) == pytest.approx([w for _, _, w in strongest_in])
    strongest_out = sorted(graph.out_edges(node, data="weight"), key=lambda e: -abs(e[2]))[:8]
    assert list(outputs["weight"]) == pytest.approx([w for _, _, w in strongest_out])
    target = strongest_out[0][1]
    key = "graph_out_" + node.replace("/", "_")
    app.session_state[key] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert not app.exception and app.session_state["graph_node"] == target
    assert app.query_params["clickedId"] == target


def saved_ids(user_db) -> list[str]:
    return list(open_user_store(user_db).experiments("graph")["id"])


def test_a_saved_graph_reopens_with_its_supernode_and_can_be_deleted(user_db):
    app = page(GRAPH, user="dana", prompt=PROMPT)
    first, second = pin_two_into_a_supernode(app)
    nodes = node_count(app)
    by_label(app.text_input, "Title").set_value("light, grouped")
    by_label(app.button, "Save graph").click().run()
    assert any("Saved as graph" in s.value and "dana" in s.value for s in app.success)
    [saved] = saved_ids(user_db)
    record = open_user_store(user_db).experiment(saved)["record"]
    assert record["state"]["supernodes"] == {"light words": [first, second]}
    assert record["view"]["node_threshold"] == 0.8 and len(record["graph"]["nodes"]) == nodes

    fresh = page(GRAPH, user="dana")  # another session: nothing computed, the saved graph opens from the store
    assert not fresh.get("bidi_component")
    fresh.session_state["graph_library"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    fresh.run()
    by_label(fresh.button, "Open").click().run()
    assert not fresh.exception and not fresh.error
    assert any("saved " + saved[:8] in i.value for i in fresh.info)
    assert node_count(fresh) == nodes
    assert not fresh.warning, "saved with the hashes of the weights this atlas was built from"
    assert fresh.session_state["graph_state"].supernodes == {"light words": [first, second]}
    fresh.session_state["graph_library"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    fresh.run()
    by_label(fresh.button, "Delete").click().run()
    assert saved_ids(user_db) == []
    audit = open_user_store(user_db).audit_frame()
    assert list(audit.query("action.str.startswith('experiment')")[["action", "reviewer"]].itertuples(index=False)) == [
        ("experiment_delete", "dana")
    ]


def test_read_only_mode_saves_and_deletes_nothing(user_db, monkeypatch):
    store = open_user_store(user_db)
    kept = store.record_experiment("graph", "dana", "kept", "m", {"graph": {}})
    monkeypatch.setenv("SAESCOPE_READ_ONLY", "1")
    app = page(GRAPH, prompt=PROMPT)
    assert any("graphs cannot be saved" in c.value for c in app.caption)
    assert not [b for b in app.button if b.label == "Save graph"]
    app.session_state["graph_library"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    app.run()
    assert by_label(app.button, "Delete").disabled
    assert saved_ids(user_db) == [kept]


def upload(app, name: str, content: bytes):
    by_label(app.file_uploader, "Import a graph (node-link or Neuronpedia JSON)").set_value(
        (name, content, "application/json")
    )
    app.run()
    assert not app.exception, app.exception
    return app


@pytest.mark.slow
def test_an_exported_graph_imports_with_the_same_nodes_and_broken_files_get_a_message(user_db, live, demo_dir):
    computed = page(GRAPH, prompt=PROMPT)
    assert {b.label for b in computed.download_button} == {"networkx node-link JSON", "Neuronpedia graph JSON"}
    graph = to_networkx(compute_graph(live, PROMPT), atlas=demo_dir / "atlas.duckdb")
    first, second = sorted(drawn_nodes(computed, "feature"))[:2]
    state = GraphState(pins=[first, second], supernodes={"light words": [first, second]})
    content = node_link_json(graph, state)

    fresh = upload(page(GRAPH), "light.json", content.encode())
    assert any("imported light.json" in i.value for i in fresh.info)
    assert node_count(fresh) == node_count(computed) == graph.number_of_nodes()
    assert sorted(drawn_nodes(fresh, "feature")) == sorted(drawn_nodes(computed, "feature"))
    assert fresh.session_state["graph_state"].supernodes == {"light words": [first, second]}
    assert not fresh.warning, "the demo's own transcoders: nothing unknown"

    broken = upload(page(GRAPH), "<b>broken</b>.json", b'{"nodes": [{"id": 1}]')
    assert any("Cannot import" in e.value and "not JSON" in e.value for e in broken.error)
    assert "<b>" not in " ".join(e.value for e in broken.error)

    foreign = json.loads(content)  # the same graph, said to come from transcoders this atlas lacks
    for node in foreign["nodes"]:
        if node["kind"] == "feature":
            node["transcoder"] = "gemma-2-2b-clt"
    other = upload(page(GRAPH), "other.json", json.dumps(foreign).encode())
    assert any("transcoders this atlas does not have" in w.value and "gemma" in w.value for w in other.warning)

    retrained = json.loads(content)  # the same names, other weights
    retrained["graph"].update(model_hash="0" * 64, transcoder_hashes={"transcoder-L1": "1" * 64})
    other = upload(page(GRAPH), "retrained.json", json.dumps(retrained).encode())
    assert any("other weights" in w.value and "model, transcoder-L1" in w.value for w in other.warning), [
        w.value for w in other.warning
    ]


@pytest.mark.slow
def test_ablating_the_feature_with_the_largest_edge_to_the_top_logit_lowers_it_as_predicted(user_db, live, demo_dir):
    graph = to_networkx(compute_graph(live, PROMPT), atlas=demo_dir / "atlas.duckdb")
    logits = [n for n, d in graph.nodes(data=True) if d["kind"] == "logit"]
    top = max(logits, key=lambda n: graph.nodes[n]["probability"])
    strongest, weight = max(
        (
            (source, w)
            for source, _, w in graph.in_edges(top, data="weight")
            if graph.nodes[source]["kind"] == "feature"
        ),
        key=lambda edge: edge[1],
    )
    assert weight > 0
    app = page(GRAPH, prompt=PROMPT)
    by_label(app.multiselect, "Features").set_value([strongest])
    by_label(app.radio, "How").set_value("ablate").run()
    by_label(app.button, "Intervene").click().run()
    assert not app.exception and not app.error
    table = next(frame.value for frame in app.dataframe if "predicted" in frame.value.columns)
    row = table[table["token"] == visible(graph.nodes[top]["token"])].iloc[0]
    assert row["after"] < row["before"] and row["change"] < 0, "ablating it lowers the top logit"
    assert row["predicted"] == pytest.approx(-weight, rel=1e-4), "the graph predicted minus the direct edge"
    before, after = (frame.value for frame in app.dataframe if list(frame.value.columns) == ["token", "probability"])
    assert before["probability"].is_monotonic_decreasing and len(after) == 10


@pytest.mark.slow
def test_intervening_on_a_supernode_scales_all_its_members(user_db, live):
    app = page(GRAPH, prompt=PROMPT)
    first, second = pin_two_into_a_supernode(app)
    chosen = by_label(app.multiselect, "Features")
    assert chosen.value == ["supernode/light words"], "a new supernode is what the panel offers to scale"
    by_label(app.radio, "How").set_value("scale").run()
    by_label(app.number_input, "scale by").set_value(3.0).run()
    assert not by_label(app.button, "Intervene").disabled
    by_label(app.button, "Intervene").click().run()
    assert not app.exception and not app.error
    table = next(frame.value for frame in app.dataframe if "predicted" in frame.value.columns)
    keys = []
    for node in (first, second):  # feature/LAYER/LATENT@POSITION -> (layer, position, latent)
        layer, rest = node.split("/")[1:]
        latent, position = rest.split("@")
        keys.append((int(layer), int(position), int(latent)))
    members = intervene(live, compute_graph(live, PROMPT), keys, 3.0)  # the same, member by member
    assert list(table["after"]) == pytest.approx([row["after"] for row in members.targets], abs=1e-4)
    assert list(table["predicted"]) == pytest.approx([row["predicted"] for row in members.targets], abs=1e-6)
    assert any(abs(change) > 1e-3 for change in table["change"]), "scaling the two features moved the targets"
