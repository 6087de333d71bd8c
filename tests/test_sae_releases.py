"""sae-lens releases as a user's machine holds them: files in the Hugging Face cache under the
release's real repo id and path (sae-lens's pretrained_saes.yaml), loaded offline, and fed the
activations their training recipe gives (``model_from_pretrained_kwargs``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analysis.live_model import LiveSpecs, load_live
from analysis.paths import REPO_ROOT
from analysis.sae_loading import SAELoadError
from tests.arch_models import put_in_hf_cache

pytestmark = pytest.mark.model

RELEASE, SAE_ID = "gpt2-small-res-jb", "blocks.0.hook_resid_pre"
TEXT = "And the king said unto his servants, Let there be light"


def release_entry(release: str) -> dict:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()[release].__dict__


def write_jb_release(hf_home: Path, d_in: int, d_sae: int = 96) -> None:
    """``gpt2-small-res-jb``'s layer-0 SAE where ``hf_hub_download`` puts it: the repo's own (pre-6.0
    sae-lens) cfg.json and weight names, shaped for a model of width ``d_in``."""
    entry = release_entry(RELEASE)
    path = entry["saes_map"][SAE_ID]
    snapshot = hf_home / "hub" / f"models--{entry['repo_id'].replace('/', '--')}" / "snapshots" / ("1" * 40)
    folder = snapshot / path
    folder.mkdir(parents=True)
    cfg = {
        "model_name": "gpt2-small",
        "hook_point": SAE_ID,
        "hook_point_layer": 0,
        "hook_point_head_index": None,
        "dataset_path": "Skylion007/openwebtext",
        "context_size": 128,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "torch.float32",
        "device": "cpu",
        "b_dec_init_method": "geometric_median",
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    generator = torch.Generator().manual_seed(3)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=generator),
        "W_dec": torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=generator), dim=1),
        "b_enc": torch.zeros(d_sae),
        "b_dec": 0.01 * torch.randn(d_in, generator=generator),
    }
    save_file(weights, folder / "sae_weights.safetensors")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("1" * 40)


@pytest.fixture(scope="module")
def hf_home(tiny, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf")
    write_jb_release(home, d_in=64)
    return home


@pytest.fixture
def in_cache(hf_home, monkeypatch):
    """This process reads the cache at ``hf_home`` (huggingface_hub reads HF_HOME once, at import)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    return hf_home


def test_a_release_in_the_cache_loads_offline_through_the_command_line(tiny, hf_home):
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    args = ["info", "--model", str(tiny.folder("gpt2")), "--sae", f"{RELEASE}/{SAE_ID}", "--device", "cpu", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "analysis", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    [sae] = json.loads(result.stdout)["saes"]
    assert (sae["name"], sae["hook"], sae["d_in"], sae["d_sae"]) == (f"{RELEASE}/{SAE_ID}", SAE_ID, 64, 96)


RECIPE = """
import sys, torch
from transformer_lens import HookedTransformer
model = HookedTransformer.from_pretrained_no_processing("gpt2", device="cpu", center_writing_weights=True)
_, cache = model.run_with_cache(torch.load(sys.argv[1]))
torch.save(cache[sys.argv[2]], sys.argv[3])
"""


def test_the_sae_sees_the_activations_of_its_release_recipe(tiny, in_cache, tmp_path):
    """gpt2-small-res-jb was trained on GPT-2 loaded by sae-lens's recipe,
    ``HookedTransformer.from_pretrained_no_processing("gpt2", center_writing_weights=True)``: run here
    by transformer-lens itself, offline, on the tiny GPT-2 placed in a cache as "gpt2" (with the
    n_ctx that the hub's gpt2 config.json has and transformer-lens's GPT-2 converter reads)."""
    live = load_live(LiveSpecs(model=str(tiny.folder("gpt2")), saes=(f"{RELEASE}/{SAE_ID}",)), device="cpu")
    assert live.sae(f"{RELEASE}/{SAE_ID}").sae.cfg.metadata.model_from_pretrained_kwargs == {
        "center_writing_weights": True
    }
    put_in_hf_cache(tiny.folder("gpt2"), tmp_path / "hf", "gpt2")
    snapshot = tmp_path / "hf" / "hub" / "models--gpt2" / "snapshots" / ("0" * 40)
    config = json.loads((snapshot / "config.json").read_text())
    (snapshot / "config.json").write_text(json.dumps(config | {"n_ctx": config["n_positions"]}))
    ids, _ = live.tokenize(TEXT)
    torch.save(ids, tmp_path / "ids.pt")
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    script = [sys.executable, "-c", RECIPE, str(tmp_path / "ids.pt"), SAE_ID, str(tmp_path / "recipe.pt")]
    result = subprocess.run(script, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        ours = live.model.run_with_cache(ids)[1][SAE_ID]
        unprocessed = tiny.live("gpt2").model.run_with_cache(ids)[1][SAE_ID]
    torch.testing.assert_close(ours, torch.load(tmp_path / "recipe.pt"), atol=1e-5, rtol=0)
    assert (ours - unprocessed).abs().max() > 1e-3  # the processing changed what the SAE sees
    torch.testing.assert_close(ours, unprocessed - unprocessed.mean(-1, keepdim=True), atol=1e-5, rtol=0)


def test_saes_trained_on_differently_processed_models_are_refused_together(tiny, in_cache):
    specs = LiveSpecs(model=str(tiny.folder("gpt2")), saes=(f"{RELEASE}/{SAE_ID}", str(tiny.saes("gpt2"))))
    with pytest.raises(SAELoadError, match="trained on differently processed models .center_writing_weights=True"):
        load_live(specs, device="cpu")


def test_a_hook_the_model_lacks_is_named_with_the_nearest_hooks(tiny, tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    hook = "blocks.7.hook_resid_pre"
    JumpReLUSAE(JumpReLUSAEConfig(d_in=64, d_sae=8, metadata=SAEMetadata(hook_name=hook))).save_model(tmp_path / "L7")
    with pytest.raises(SAELoadError, match=r"uses hook 'blocks.7.hook_resid_pre', .* nearest: blocks.1.hook_resid_pre"):
        load_live(LiveSpecs(model=str(tiny.folder("llama3")), saes=(str(tmp_path / "L7"),)), device="cpu")
