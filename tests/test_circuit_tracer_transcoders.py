"""Graphs through circuit-tracer's own transcoder formats: a cross-layer transcoder (CLT) and a
per-layer transcoder set, each described by the config.yaml circuit-tracer reads and saved by
circuit-tracer's own ``to_safetensors``, from a folder and from the Hugging Face cache."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from analysis.cli import main
from analysis.graphs import GraphSettings, compute_graph, replacement_model
from analysis.graphs.replacement import transcoder_set
from analysis.graphs.transcoder_sets import TranscoderSetError
from analysis.live_model import LiveSpecs, load_live
from analysis.paths import REPO_ROOT
from tests.arch_models import assert_edges_equal_a_frozen_intervention, put_in_hf_cache
from tests.atlas_rows import atlas_rows
from tests.cli_run import cli_in_process

pytestmark = [pytest.mark.model, pytest.mark.slow]

TEXT = "And the king said unto his servants, Let there be light"
HOOKS = {"feature_input_hook": "ln2.hook_normalized", "feature_output_hook": "hook_mlp_out"}


@pytest.fixture(scope="module")
def clt_folder(tiny, tmp_path_factory):
    """A jump-ReLU CLT for the tiny GPT-2: each layer's features write to that layer and every later
    one; encoders scaled so that about a third of the features fire."""
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    folder = tmp_path_factory.mktemp("clt")
    model = tiny.live("gpt2").model
    n_layers, d_model, width = model.cfg.n_layers, model.cfg.d_model, 48
    ids = torch.tensor([[8190, *range(100, 160)]])
    with torch.no_grad():
        _, cache = model.run_with_cache(ids)
        clt = CrossLayerTranscoder(
            n_layers,
            width,
            d_model,
            activation_function="jump_relu",
            lazy_decoder=False,
            scan="tiny-clt",
            dtype=torch.float32,
            device=torch.device("cpu"),
            feature_input_hook=HOOKS["feature_input_hook"],
            feature_output_hook=HOOKS["feature_output_hook"],
        )
        assert clt.W_dec is not None  # lazy_decoder=False allocates the decoder
        generator = torch.Generator().manual_seed(5)
        for layer in range(n_layers):
            scale = cache[f"blocks.{layer}.ln2.hook_normalized"][0, 1:].pow(2).mean().sqrt()
            clt.W_enc[layer] = torch.randn(width, d_model, generator=generator) / (d_model**0.5 * scale)
            clt.W_dec[layer].copy_(0.1 * torch.randn(width, n_layers - layer, d_model, generator=generator))
        clt.activation_function.threshold.fill_(0.5)
    clt.to_safetensors(str(folder))
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"model_kind": "cross_layer_transcoder", "scan": "tiny-clt", **HOOKS})
    )
    return folder


@pytest.fixture(scope="module")
def set_folder(tiny, tmp_path_factory):
    """The tiny GPT-2's sae-lens transcoders as circuit-tracer's transcoder set: layer_L.safetensors
    and a config.yaml listing them."""
    folder = tmp_path_factory.mktemp("transcoder-set")
    live = tiny.live("gpt2")
    transcoders = transcoder_set([live.sae(f"transcoder-L{layer}") for layer in range(2)])
    transcoders.to_safetensors(str(folder))
    config = {
        "model_kind": "transcoder_set",
        "scan": "tiny-set",
        "transcoders": ["layer_0.safetensors", "layer_1.safetensors"],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config | HOOKS))
    return folder


def test_a_clt_graph_computes_the_models_logits_and_its_edges_are_a_frozen_intervention(tiny, clt_folder):
    live = load_live(LiveSpecs(model=str(tiny.folder("gpt2")), saes=(str(clt_folder),)), device="cpu")
    model = replacement_model(live)
    ids, _ = live.tokenize(TEXT)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), live.model(ids), atol=1e-5, rtol=0)
    result = compute_graph(live, TEXT, settings=GraphSettings(max_feature_nodes=64))
    assert result.transcoders == ["tiny-clt (layer 0)", "tiny-clt (layer 1)"]
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    # layer-0 features reach layer 1's output directly, which only a CLT's decoder does
    assert isinstance(model.transcoders, CrossLayerTranscoder) and model.transcoders.W_dec is not None
    assert model.transcoders.W_dec[0].shape[1] == 2
    assert_edges_equal_a_frozen_intervention(model, result.graph)


def test_a_transcoder_set_from_the_cache_gives_the_graph_of_the_same_sae_lens_transcoders(
    tiny, set_folder, tmp_path, monkeypatch
):
    import huggingface_hub.constants

    put_in_hf_cache(set_folder, tmp_path / "hf", "saescope-tiny/transcoder-set")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from_cache = load_live(
        LiveSpecs(model=str(tiny.folder("gpt2")), saes=("saescope-tiny/transcoder-set",)), device="cpu"
    )
    ours = tiny.live("gpt2")
    settings = GraphSettings(max_feature_nodes=None)
    theirs_graph = compute_graph(from_cache, TEXT, settings=settings)
    ours_graph = compute_graph(ours, TEXT, settings=settings)
    assert theirs_graph.transcoders == ["tiny-set (layer 0)", "tiny-set (layer 1)"]
    assert torch.equal(theirs_graph.graph.active_features, ours_graph.graph.active_features)
    torch.testing.assert_close(
        theirs_graph.graph.adjacency_matrix, ours_graph.graph.adjacency_matrix, atol=1e-5, rtol=0
    )
    out = tmp_path / "graph.json"
    args = ["graph", "--model", str(tiny.folder("gpt2")), "--sae", str(set_folder), "--prompt", TEXT, "--out", str(out)]
    assert main([*args, "--device", "cpu", "--max-feature-nodes", "32"]) == 0
    assert {"embedding", "feature", "logit"} <= {node["kind"] for node in json.loads(out.read_text())["nodes"]}


def test_a_configuration_that_does_not_fit_the_model_is_one_line(tiny, clt_folder, tmp_path, capsys):
    import shutil

    shutil.copytree(clt_folder, tmp_path / "clt")
    config = {
        "model_kind": "cross_layer_transcoder",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "mlp.hook_out",
    }
    (tmp_path / "clt" / "config.yaml").write_text(yaml.safe_dump(config))
    args = ["graph", "--model", str(tiny.folder("gpt2")), "--sae", str(tmp_path / "clt"), "--prompt", TEXT]
    assert main([*args, "--out", str(tmp_path / "g.json"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: transcoders 'clt' use hook 'mlp.hook_out', which this model lacks\n"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.yaml").write_text("model_kind: magic\n")
    with pytest.raises(TranscoderSetError, match="model_kind must be one of"):
        load_live(LiveSpecs(model=str(tiny.folder("gpt2")), saes=(str(tmp_path / "bad"),)), device="cpu")


def saescope(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args, "--device", "cpu"], cwd=REPO_ROOT, capture_output=True, text=True
    )


def test_info_describes_a_transcoder_set_and_a_clt(tiny, clt_folder, set_folder):
    result = saescope("info", "--model", str(tiny.folder("gpt2")), "--sae", str(clt_folder), "--sae", str(set_folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()[2:]
    assert lines == [
        "cross-layer transcoder tiny-clt: cross_layer_transcoder, hook blocks.*.ln2.hook_normalized -> "
        "blocks.*.hook_mlp_out, d_in 64, d_sae 48",
        "transcoder set tiny-set: transcoder_set, hook blocks.*.ln2.hook_normalized -> blocks.*.hook_mlp_out, "
        "d_in 64, d_sae 128",
    ]


def test_precompute_reads_a_transcoder_sets_layers_as_the_sae_lens_transcoders_they_came_from(
    tiny, set_folder, clt_folder, tmp_path, capsys
):
    """The set was written from the tiny GPT-2's sae-lens transcoders (padded to one width), so its
    atlas's statistics are theirs, and the padding latents never fire. The run is a subprocess; the
    CLT's refusal runs in this process (a second subprocess would only repeat the imports)."""
    out = tmp_path / "set.duckdb"
    args = ["precompute", "--model", str(tiny.folder("gpt2")), "--tokens", "256", "--context", "32", "--batch", "4"]
    result = saescope(*args, "--sae", str(set_folder), "--out", str(out))
    assert result.returncode == 0, result.stderr
    reference = tiny.atlas("gpt2")
    for layer in range(2):
        sql = "SELECT fire_count, max_act, act_sum FROM features JOIN saes USING (sae) WHERE name = ? ORDER BY latent"
        theirs = atlas_rows(out, sql, f"tiny-set (layer {layer})")
        ours = atlas_rows(reference, sql, f"transcoder-L{layer}")
        assert len(theirs) == 128
        assert [row[0] for row in theirs[: len(ours)]] == [row[0] for row in ours]  # fire counts
        np.testing.assert_allclose(np.array(theirs[: len(ours)]), np.array(ours), rtol=1e-5, atol=1e-4)
        assert all(fire == 0 for fire, _, _ in theirs[len(ours) :])
    result = cli_in_process(
        capsys, *args, "--sae", str(clt_folder), "--out", str(tmp_path / "clt.duckdb"), "--device", "cpu"
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "is a cross-layer transcoder: it makes graphs" in result.stderr


def test_the_graph_page_draws_a_clt_named_in_the_settings(tiny, clt_folder, user_db, tmp_path, monkeypatch):
    """The atlas (the tiny GPT-2's, built from per-layer transcoders) plus a CLT from
    SAESCOPE_GRAPH_TRANSCODERS: the page computes the CLT's graph, whose feature nodes are its layers'."""
    import shutil

    from tests.dashboard_app import page

    (tmp_path / "atlases").mkdir()
    shutil.copy(tiny.atlas("gpt2"), tmp_path / "atlases" / "tiny.duckdb")
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    monkeypatch.setenv("SAESCOPE_GRAPH_TRANSCODERS", str(clt_folder))
    app = page("pages/7_Graph.py", atlas="tiny", prompt=TEXT)
    assert not app.exception and not app.error and not app.warning, [w.value for w in app.warning]
    [chart] = [e for e in app.get("bidi_component") if e.proto.component_name == "saescope_graph_chart"]
    spec = json.loads(chart.proto.json)["figure"]
    hovers = [text for trace in spec["data"] if trace.get("name") == "feature" for text in trace["hovertext"]]
    assert hovers and all(text.startswith("tiny-clt (layer ") for text in hovers), hovers[:3]
