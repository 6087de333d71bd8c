"""Gemma Scope as a user's machine holds it: a residual SAE and a transcoder, each a native
``params.npz`` in the Hugging Face cache under the release's real repo id and path (sae-lens's
pretrained_saes.yaml), loaded offline through sae-lens's own Gemma Scope converters.

sae-lens's converters take the SAE's width from the repo id (``gemma-2-2b``: d_in 2304) and its
latent count from the folder name (``width_16k``: 16,384), not from the npz, so the files here have
Gemma-2-2B's real shapes and the model is a Gemma-2 of Gemma-2-2B's width with 2 thin layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.live_model import LiveSpecs, load_live
from analysis.model_loading import load_model
from analysis.paths import REPO_ROOT
from tests.arch_models import save_tiny_model

pytestmark = [pytest.mark.model, pytest.mark.slow]

D_MODEL, D_SAE = 2304, 16384  # what sae-lens's converters fix for gemma-2-2b's width_16k folders
RESID = ("gemma-scope-2b-pt-res-canonical", "layer_0/width_16k/canonical")
TRANSCODER = ("gemma-scope-2b-pt-transcoders", "layer_0/width_16k/average_l0_76")
TEXT = "And the king said unto his servants, Let there be light"


def repo_and_path(release: str, sae_id: str) -> tuple[str, str]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory()[release]
    return entry.repo_id, entry.saes_map[sae_id]


def write_params(hf_home: Path, release: str, sae_id: str, inputs: torch.Tensor, seed: int) -> Path:
    """A JumpReLU ``params.npz`` (Gemma Scope's own key names and [d_in, d_sae] layout) where
    ``hf_hub_download`` puts the release's file: random unit decoder rows, the encoder their
    transpose (tied, as Gemma Scope's training starts) scaled so that pre-activations have unit
    spread on ``inputs``, and thresholds of 0.5, so that about a third of the latents fire."""
    repo_id, path = repo_and_path(release, sae_id)
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = f"{seed:040d}"
    folder = repo / "snapshots" / revision / path
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    scale = float(inputs.pow(2).mean().sqrt())
    w_dec = rng.standard_normal((D_SAE, D_MODEL), dtype=np.float32)
    w_dec /= np.linalg.norm(w_dec, axis=1, keepdims=True)
    params = {
        "W_enc": np.ascontiguousarray(w_dec.T) / np.float32(scale),
        "W_dec": w_dec,
        "b_enc": np.zeros(D_SAE, dtype=np.float32),
        "b_dec": 0.01 * rng.standard_normal(D_MODEL, dtype=np.float32),
        "threshold": np.full(D_SAE, 0.5, dtype=np.float32),
    }
    np.savez(folder / "params.npz", **params)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return folder / "params.npz"


@pytest.fixture(scope="module")
def gemma(tmp_path_factory) -> Path:
    """A random-initialised Gemma-2 of Gemma-2-2B's width, saved by ``transformers``."""
    from transformers import Gemma2Config

    config = Gemma2Config(
        hidden_size=D_MODEL,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=8,
        vocab_size=8192,
        max_position_embeddings=256,
        bos_token_id=8190,
        eos_token_id=8190,
        pad_token_id=8191,
    )
    return save_tiny_model("gemma2-2304", tmp_path_factory.mktemp("gemma2-2304"), config)


@pytest.fixture(scope="module")
def hf_home(gemma, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf")
    model = load_model(str(gemma), device="cpu").model
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([[8190, *range(100, 160)]]))
    write_params(home, *RESID, cache["blocks.0.hook_resid_post"][0, 1:], seed=1)
    write_params(home, *TRANSCODER, cache["blocks.0.ln2.hook_normalized"][0, 1:], seed=2)
    return home


def spec(release_and_id: tuple[str, str]) -> str:
    return "/".join(release_and_id)


def test_info_describes_gemma_scope_saes_from_the_cache_offline(gemma, hf_home):
    env = os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    args = ["info", "--model", str(gemma), "--sae", spec(RESID), "--sae", spec(TRANSCODER), "--device", "cpu", "--json"]
    result = subprocess.run(
        [sys.executable, "-m", "analysis", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    resid, transcoder = json.loads(result.stdout)["saes"]
    assert (resid["name"], resid["kind"], resid["hook"], resid["architecture"]) == (
        spec(RESID),
        "sae",
        "blocks.0.hook_resid_post",
        "jumprelu",
    )
    assert (transcoder["kind"], transcoder["hook"], transcoder["hook_out"]) == (
        "transcoder",
        "blocks.0.ln2.hook_normalized",
        "blocks.0.hook_mlp_out",
    )
    assert {(s["d_in"], s["d_sae"]) for s in (resid, transcoder)} == {(D_MODEL, D_SAE)}


def hugging_face_points(folder: Path, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Hugging Face model's tensors at the points the reference tools give sae-lens's hook
    names on Gemma 2 (circuit-tracer's tl_nnsight_mapping): ``hook_resid_post`` is the layer's
    output (``hidden_states[1]``), ``ln2.hook_normalized`` the pre-MLP RMSNorm's normalisation
    before its gain (``pre_feedforward_layernorm._norm``), ``hook_mlp_out`` the post-MLP norm's output.
    Eager attention, as Gemma 2 is meant to run: transformers' default SDPA path drops its attention
    logit soft-capping (at this width that moves attention outputs by ~1e-3)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    layer = hf.model.layers[0]
    seen: dict[str, torch.Tensor] = {}

    def pre_mlp(module, args):
        seen["blocks.0.ln2.hook_normalized"] = module._norm(args[0].float())

    def mlp_out(module, args, output):
        seen["blocks.0.hook_mlp_out"] = output

    handles = [
        layer.pre_feedforward_layernorm.register_forward_pre_hook(pre_mlp),
        layer.post_feedforward_layernorm.register_forward_hook(mlp_out),
    ]
    with torch.no_grad():
        seen["blocks.0.hook_resid_post"] = hf(ids, output_hidden_states=True).hidden_states[1]
    for handle in handles:
        handle.remove()
    return seen


def test_gemma_scope_saes_load_through_sae_lens_converters_and_see_their_recipes_activations(
    gemma, hf_home, monkeypatch
):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    live = load_live(LiveSpecs(model=str(gemma), saes=(spec(RESID), spec(TRANSCODER))), device="cpu")
    resid, transcoder = live.sae(spec(RESID)), live.sae(spec(TRANSCODER))
    for loaded, release in ((resid, RESID), (transcoder, TRANSCODER)):
        repo_id, path = repo_and_path(*release)
        [npz] = (hf_home / "hub" / f"models--{repo_id.replace('/', '--')}").glob(f"snapshots/*/{path}/params.npz")
        with np.load(npz) as params:  # the converter's state is the file's, unchanged
            for key in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
                assert torch.equal(getattr(loaded.sae, key).detach(), torch.from_numpy(params[key])), key
        # no model processing in Gemma Scope's recipe, so the model stays as loaded
        assert not getattr(loaded.sae.cfg.metadata, "model_from_pretrained_kwargs", None)
    ids, _ = live.tokenize(TEXT)
    with torch.no_grad():
        _, cache = live.model.run_with_cache(ids)
    expected = hugging_face_points(gemma, ids)
    assert transcoder.hook_name_out == "blocks.0.hook_mlp_out"
    for hook in (resid.hook_name, transcoder.hook_name, transcoder.hook_name_out):
        torch.testing.assert_close(cache[hook], expected[hook], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        for loaded in (resid, transcoder):
            fired = (loaded.sae.encode(cache[loaded.hook_name][0, 1:]) > 0).float().mean()
            assert 0.1 < fired < 0.6, (loaded.name, fired)  # the SAEs really fire on this model
