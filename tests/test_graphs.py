"""Attribution graphs on the demo model and its transcoders: the replacement model computes what the
model computes, graph edges are the direct effects a frozen intervention measures, pruning keeps
what it promises, and bad input is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.cli import main
from analysis.graphs import (
    GraphSettings,
    GraphSetupError,
    GraphTarget,
    compute_graph,
    from_neuronpedia,
    replacement_model,
    to_networkx,
    to_neuronpedia,
)
from analysis.graphs.intervention import intervene
from analysis.live_model import LiveInputError, LiveSpecs, load_live

pytestmark = pytest.mark.model

PROMPT = "And God said, Let there be light: and there was"


@pytest.fixture(scope="module")
def result(live):
    """The default settings: the most influential of the prompt's active features attributed."""
    return compute_graph(live, PROMPT)


def test_replacement_model_computes_the_models_logits(live):
    ids, _ = live.tokenize(PROMPT)
    with torch.no_grad():
        assert torch.equal(replacement_model(live)(ids), live.model(ids))


def test_replacement_features_are_the_sae_lens_transcoders_activations(live):
    ids, _ = live.tokenize(PROMPT)
    _, features = replacement_model(live).get_activations(ids)
    _, cache = live.model.run_with_cache(ids)
    scan = replacement_model(live).scan
    assert isinstance(scan, list)  # a transcoder set names each layer's transcoder
    for layer, name in enumerate(scan):
        transcoder = live.sae(name)
        expected = transcoder.sae.encode(cache[transcoder.hook_name][0])
        # circuit-tracer zeroes position 0 (BOS); padding latents beyond d_sae never fire
        assert torch.allclose(features[layer, 1:, : transcoder.d_sae], expected[1:], atol=1e-5)
        assert not features[layer, :, transcoder.d_sae :].any()


@pytest.mark.slow
def test_sampled_edges_equal_a_frozen_intervention_on_their_source(live, result):
    """Setting one source feature to 0 with attention, LayerNorm scales and every transcoder output
    frozen (circuit-tracer's constrained intervention) changes each target feature's pre-activation
    by minus its edge weight, and each target logit (demeaned) likewise."""
    graph, model = result.graph, replacement_model(live)
    n_layers, n_features = graph.cfg.n_layers, len(graph.selected_features)
    ids = graph.input_tokens
    base_logits, base_pre = model.get_activations(ids, apply_activation_function=False)
    targets = graph.active_features[graph.selected_features]
    logit_ids = graph.logit_token_ids
    sources = torch.randperm(n_features, generator=torch.Generator().manual_seed(0))[:20].tolist()
    checked = 0
    for source in sources:
        layer, position, latent = graph.active_features[graph.selected_features[source]].tolist()
        logits, pre = model.feature_intervention(
            ids, [(layer, position, latent, 0.0)], constrained_layers=range(n_layers), apply_activation_function=False
        )
        assert pre is not None  # feature_intervention returns activations unless told not to
        measured = (base_pre - pre)[targets[:, 0], targets[:, 1], targets[:, 2]]
        assert torch.allclose(graph.adjacency_matrix[:n_features, source], measured, atol=1e-3)
        change = (base_logits - logits)[0, -1]
        measured_logits = (change - change.mean())[logit_ids]
        assert torch.allclose(graph.adjacency_matrix[-len(logit_ids) :, source], measured_logits, atol=1e-3)
        checked += int((measured.abs() > 1e-2).sum() + (measured_logits.abs() > 1e-2).sum())
    assert checked >= 100  # the comparison is not between zeros


def test_ablating_the_feature_most_attributed_to_the_top_logit_moves_it_the_predicted_way(live, result):
    graph, model = result.graph, replacement_model(live)
    n_features = len(graph.selected_features)
    top_logit_row = graph.adjacency_matrix[-len(graph.logit_targets), :n_features]
    strongest = int(top_logit_row.abs().argmax())
    layer, position, latent = graph.active_features[graph.selected_features[strongest]].tolist()
    ids = graph.input_tokens
    top = graph.logit_targets[0].vocab_idx
    with torch.no_grad():
        before = model(ids)[0, -1]
    after, _ = model.feature_intervention(ids, [(layer, position, latent, 0.0)], freeze_attention=False)
    change = (after[0, -1] - after[0, -1].mean()) - (before - before.mean())
    # the edge is the feature's direct contribution, so removing the feature moves the logit the
    # other way (the model's other paths may absorb part of the change)
    assert torch.sign(change[top]) == -torch.sign(top_logit_row[strongest])


def test_pruning_keeps_every_embedding_and_logit(result):
    network = to_networkx(result)
    kinds = [data["kind"] for _, data in network.nodes(data=True)]
    assert kinds.count("embedding") == len(result.tokens)
    assert kinds.count("logit") == len(result.graph.logit_targets)
    assert 0 < network.graph["replacement_score"] <= 1 and 0 < network.graph["completeness_score"] <= 1
    assert all(isinstance(data["weight"], float) for _, _, data in network.edges(data=True))


def test_a_higher_node_threshold_never_shows_fewer_nodes(result):
    sizes = [to_networkx(result, node_threshold=t).number_of_nodes() for t in (0.5, 0.8, 0.95)]
    assert sizes == sorted(sizes)


def test_feature_nodes_carry_their_atlas_label(result, demo_dir):
    network = to_networkx(result, atlas=demo_dir / "atlas.duckdb")
    features = [data for _, data in network.nodes(data=True) if data["kind"] == "feature"]
    assert features and any(data["label"] for data in features)
    assert {data["transcoder"] for data in features} <= set(result.transcoders)


def logit_nodes(network) -> list[str]:
    return [node for node, data in network.nodes(data=True) if data["kind"] == "logit"]


def test_neuronpedia_json_holds_the_same_pruned_graph_and_reads_back(live, result, demo_dir):
    exported = to_neuronpedia(result, live.tokenizer, "light", atlas=demo_dir / "atlas.duckdb")
    assert exported["metadata"]["transcoder_list"] == result.transcoders
    assert exported["metadata"]["prompt_tokens"] == result.tokens
    imported = from_neuronpedia(json.loads(json.dumps(exported)))
    ours = to_networkx(result)

    def kinds(network) -> list[str]:
        return sorted(data["kind"] for _, data in network.nodes(data=True))

    assert kinds(imported) == kinds(ours)
    assert imported.number_of_edges() == ours.number_of_edges()
    weights = sorted(data["weight"] for _, _, data in imported.edges(data=True))
    assert weights == pytest.approx(sorted(data["weight"] for _, _, data in ours.edges(data=True)))
    labelled = [data["label"] for _, data in imported.nodes(data=True) if data["kind"] == "feature"]
    assert any(labelled)


@pytest.mark.slow
def test_a_chosen_token_and_a_logit_difference_are_the_only_targets(live):
    bounded = GraphSettings(max_feature_nodes=64)
    chosen = to_networkx(compute_graph(live, PROMPT, GraphTarget(token=" light"), bounded))
    assert logit_nodes(chosen) == [f"logit/{live.tokenizer.encode(' light')[0]}"]
    # the end-of-text token is an added special token, beyond the tokenizer's base vocab_size
    end = to_networkx(compute_graph(live, PROMPT, GraphTarget(token=live.tokenizer.eos_token), bounded))
    assert logit_nodes(end) == [f"logit/{live.tokenizer.eos_token_id}"]
    difference = to_networkx(compute_graph(live, PROMPT, GraphTarget(token=" light", versus=" darkness"), bounded))
    assert logit_nodes(difference) == ["logit/custom"]


@pytest.mark.parametrize(
    ("prompt", "target", "settings", "message"),
    [
        ("   ", GraphTarget(), GraphSettings(), "the prompt is empty"),
        (" light" * 65, GraphTarget(), GraphSettings(), "the prompt is 65 tokens; graphs take at most 64"),
        (" light" * 9, GraphTarget(), GraphSettings(max_tokens=8), "graphs take at most 8"),
        (PROMPT, GraphTarget(token=" lightxyzzy"), GraphSettings(), "is not one token"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(live, prompt, target, settings, message):
    with pytest.raises(LiveInputError, match=message):
        compute_graph(live, prompt, target, settings)


def test_a_model_without_a_transcoder_at_every_layer_cannot_make_graphs(demo_dir):
    saes = (str(demo_dir / "saes" / "transcoder-L0"), str(demo_dir / "saes" / "resid-L2"))
    partial = load_live(LiveSpecs(model=str(demo_dir / "model"), saes=saes), device="cpu")
    with pytest.raises(GraphSetupError, match=r"a transcoder at every layer; layers \[1, 2, 3\] of 4 have none"):
        compute_graph(partial, PROMPT)


def test_the_command_line_writes_the_pruned_graph_as_node_link_json(tmp_path):
    out = tmp_path / "graph.json"
    args = ["graph", "--prompt", PROMPT, "--target", " light", "--max-feature-nodes", "64", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    written = json.loads(out.read_text())
    assert written["directed"] and written["graph"]["target_token"] == " light"
    assert {"embedding", "feature", "logit"} <= {node["kind"] for node in written["nodes"]}
    assert all(isinstance(link["weight"], float) for link in written["links"])


def test_the_command_line_writes_neuronpedia_json_named_by_the_file(tmp_path):
    out = tmp_path / "let-there-be-light.json"
    args = ["graph", "--prompt", PROMPT, "--max-feature-nodes", "64", "--neuronpedia", "--out", str(out)]
    assert main([*args, "--device", "cpu"]) == 0
    written = json.loads(out.read_text())
    assert written["metadata"]["slug"] == "let-there-be-light"
    assert from_neuronpedia(written).number_of_nodes() == len(written["nodes"])


def test_the_command_line_refuses_an_empty_prompt_in_one_line(tmp_path, capsys):
    assert main(["graph", "--prompt", " ", "--out", str(tmp_path / "g.json"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: --prompt is empty: give some text\n"


def test_an_intervention_on_a_logit_difference_measures_the_difference(live):
    target = GraphTarget(token=" light", versus=" darkness")
    result = compute_graph(live, PROMPT, target, GraphSettings(max_feature_nodes=64))
    graph = result.graph
    feature = tuple(graph.active_features[graph.selected_features[0]].tolist())
    unchanged = intervene(live, result, [feature], 1.0)
    [measured] = unchanged.targets
    ids, _ = live.tokenize(PROMPT)
    with torch.no_grad():
        logits = live.model(ids)[0, -1]
    light, darkness = (live.tokenizer.encode(t)[0] for t in (" light", " darkness"))
    assert measured["before"] == pytest.approx(float(logits[light] - logits[darkness]), abs=1e-4)
    assert measured["change"] == pytest.approx(0.0, abs=1e-4) and measured["predicted"] == 0.0
    with pytest.raises(LiveInputError, match="choose features of this graph"):
        intervene(live, result, [(0, 0, 99999)], 0.0)
