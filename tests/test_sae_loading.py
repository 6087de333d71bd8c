"""Loading SAEs and transcoders: the demo's, through the users' loader, and every way a spec can be wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata

from analysis.sae_loading import SAELoadError, check_fits, load_saes
from analysis.sae_metrics import evaluate_saes

pytestmark = pytest.mark.model


def test_demo_folder_holds_a_transcoder_per_layer_and_a_residual_sae(demo_saes, demo_model):
    n_layers = demo_model.model.cfg.n_layers
    transcoders = [s for s in demo_saes if s.is_transcoder]
    assert [t.hook_name for t in transcoders] == [f"blocks.{i}.ln2.hook_normalized" for i in range(n_layers)]
    assert [t.hook_name_out for t in transcoders] == [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)]
    residual = [s for s in demo_saes if not s.is_transcoder]
    assert [s.hook_name for s in residual] == [f"blocks.{n_layers // 2}.hook_resid_pre"]
    check_fits(demo_model.model, demo_saes)


@pytest.mark.slow
def test_demo_saes_reproduce_their_reported_quality(demo_model, demo_saes, heldout_windows, demo_metrics):
    tokenizer = demo_model.model.tokenizer
    measured = evaluate_saes(demo_model.model, demo_saes, heldout_windows, tokenizer.all_special_ids)
    for quality in measured:
        reported = demo_metrics["saes"][quality.name]
        assert quality.explained_variance == pytest.approx(reported["explained_variance"], abs=0.05)
        assert quality.mean_l0 == pytest.approx(reported["mean_l0"], rel=0.2)
        assert quality.explained_variance >= 0.7 - 0.05


@pytest.mark.slow
def test_a_real_activation_encodes_sparsely_and_decodes_close(demo_model, demo_saes):
    residual = next(s for s in demo_saes if not s.is_transcoder)
    _, cache = demo_model.model.run_with_cache("def parse(path):\n    return open(path).read()")
    activation = cache[residual.hook_name][0, 1:]
    latents = residual.sae.encode(activation)
    assert 0 < (latents > 0).sum(-1).float().mean() <= 64
    error = (residual.sae.decode(latents) - activation).pow(2).sum() / (activation - activation.mean(0)).pow(2).sum()
    assert error < 0.5


def _save_standard_sae(folder, d_in: int, hook: str) -> None:
    cfg = StandardSAEConfig(d_in=d_in, d_sae=16, metadata=SAEMetadata(hook_name=hook))
    StandardSAE(cfg).save_model(folder)


def test_sae_of_another_width_does_not_fit(tmp_path, demo_model):
    _save_standard_sae(tmp_path / "wide", 512, "blocks.1.hook_resid_pre")
    with pytest.raises(SAELoadError, match="expects width 512 at 'blocks.1.hook_resid_pre'.*width 256"):
        check_fits(demo_model.model, load_saes(str(tmp_path / "wide")))


def test_sae_on_a_hook_the_model_lacks_does_not_fit(tmp_path, demo_model):
    _save_standard_sae(tmp_path / "deep", 256, "blocks.9.hook_resid_pre")
    with pytest.raises(SAELoadError, match="'blocks.9.hook_resid_pre', which this model \\(4 layers"):
        check_fits(demo_model.model, load_saes(str(tmp_path / "deep")))


def test_missing_folder_and_empty_folder_are_clear_errors(tmp_path):
    with pytest.raises(SAELoadError, match="does not exist"):
        load_saes(str(tmp_path / "nothing-here"))
    with pytest.raises(SAELoadError, match="holds no SAE"):
        load_saes(str(tmp_path))


def test_unknown_architecture_is_a_clear_error(tmp_path, demo_dir):
    folder = tmp_path / "odd"
    shutil.copytree(demo_dir / "saes" / "resid-L2", folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg["architecture"] = "mystery"
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SAELoadError, match="unknown SAE architecture 'mystery'"):
        load_saes(str(folder))


@pytest.mark.slow
def test_release_that_is_not_downloaded_says_how_to_fix_it():
    with pytest.raises(SAELoadError, match="not available offline"):
        load_saes("gpt2-small-res-jb/blocks.8.hook_resid_pre")


def test_unknown_release_is_a_clear_error():
    with pytest.raises(SAELoadError, match="unknown SAE 'no-such-release/layer_0'"):
        load_saes("no-such-release/layer_0")


def test_demo_transcoder_predicts_the_mlp_output(demo_model, demo_saes):
    transcoder = next(s for s in demo_saes if s.is_transcoder)
    _, cache = demo_model.model.run_with_cache("Blessed are the meek: for they shall inherit the earth.")
    source = cache[transcoder.hook_name][0, 1:]
    target = cache[transcoder.hook_name_out][0, 1:]
    prediction = transcoder.sae.decode(transcoder.sae.encode(source))
    assert torch.nn.functional.cosine_similarity(prediction, target, dim=-1).mean() > 0.7
