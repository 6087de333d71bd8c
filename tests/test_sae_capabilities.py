"""SAE capabilities, checked on real sae-lens SAEs written to disk and read back through the users'
loader: the demo's SAEs decode affinely, a top-k SAE that rescales by decoder norms does not, and the
command line refuses what an SAE cannot do (clamp steering, graphs) in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

from analysis.sae_capabilities import Capability, missing
from analysis.sae_loading import load_saes
from tests.cli_run import cli_in_process

AFFINE, GRAPH = Capability.AFFINE_DECODER, Capability.GRAPH_COMPATIBLE


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args, "--device", "cpu"], capture_output=True, text=True, timeout=300
    )


def edited_copy(source: Path, destination: Path, **cfg) -> Path:
    """A copy of an SAE folder with some of its cfg.json fields changed."""
    shutil.copytree(source, destination)
    config = json.loads((destination / "cfg.json").read_text())
    (destination / "cfg.json").write_text(json.dumps({**config, **cfg}))
    return destination


@pytest.fixture(scope="module")
def rescaling_topk(tmp_path_factory) -> Path:
    """A top-k SAE at the demo's resid-L2 hook whose decode divides by decoder norms (not 1 here)."""
    folder = tmp_path_factory.mktemp("saes") / "topk-L2"
    cfg = TopKSAEConfig(
        d_in=256,
        d_sae=64,
        k=8,
        rescale_acts_by_decoder_norm=True,
        metadata=SAEMetadata(hook_name="blocks.2.hook_resid_pre"),
    )
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
    sae.save_model(folder)
    return folder


def test_the_demo_saes_decode_affinely_and_only_its_transcoders_make_graphs(demo_saes):
    assert {s.name: missing(s, AFFINE) for s in demo_saes} == {s.name: None for s in demo_saes}
    graph = {s.name: missing(s, GRAPH) for s in demo_saes}
    assert graph.pop("resid-L2") == "'resid-L2' is not a transcoder: graphs need transcoders"
    assert set(graph.values()) == {None} and len(graph) == 4


def test_a_decoder_that_rescales_by_its_norms_is_not_affine(rescaling_topk):
    (loaded,) = load_saes(str(rescaling_topk))
    assert missing(loaded, AFFINE) == "topk-L2 (topk) does not decode as z @ W_dec + b_dec"
    z = torch.zeros(1, 64)
    z[0, 5] = 2.0
    with torch.no_grad():  # what the probe found: decode(z) is not z @ W_dec + b_dec
        assert not torch.allclose(loaded.sae.decode(z), z @ loaded.sae.W_dec + loaded.sae.b_dec, atol=1e-3)


def test_normalized_activations_are_not_an_affine_decoder(demo_dir, tmp_path):
    folder = edited_copy(demo_dir / "saes" / "resid-L2", tmp_path / "resid-L2", normalize_activations="layer_norm")
    (loaded,) = load_saes(str(folder))
    assert missing(loaded, AFFINE) == (
        "resid-L2 normalizes activations ('layer_norm'), so its decoder is not z @ W_dec + b_dec"
    )


def test_clamp_is_refused_in_one_line_for_an_sae_without_an_affine_decoder(rescaling_topk, capsys):
    """The refusal as a user meets it (a subprocess); the additive run, in this process."""
    common = ["steer", "--prompt", "In the beginning", "--sae", str(rescaling_topk), "--max-new-tokens", "2"]
    refused = run_cli(*common, "--feature", "topk-L2:5:3", "--method", "clamp")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert (
        "error: clamp needs an SAE with capability 'affine decoder': "
        "topk-L2 (topk) does not decode as z @ W_dec + b_dec"
    ) in refused.stderr
    steered = cli_in_process(capsys, *common, "--feature", "topk-L2:5:3", "--method", "additive", "--json")
    assert steered.returncode == 0, steered.stderr  # only the method that needs the capability refuses
    assert json.loads(steered.stdout)["method"] == "additive"


def test_graphs_refuse_a_transcoder_that_preprocesses_its_input(demo_dir, tmp_path):
    folder = tmp_path / "transcoders"
    for name in ("transcoder-L0", "transcoder-L2", "transcoder-L3"):
        shutil.copytree(demo_dir / "saes" / name, folder / name)
    edited_copy(demo_dir / "saes" / "transcoder-L1", folder / "transcoder-L1", normalize_activations="layer_norm")
    result = run_cli("graph", "--prompt", "In the beginning", "--sae", str(folder), "--out", str(tmp_path / "g.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        "error: transcoder 'transcoder-L1' preprocesses its input, which circuit-tracer cannot express"
    ) in result.stderr
    assert not (tmp_path / "g.json").exists()
