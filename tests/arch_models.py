"""Tiny random-initialised models of every supported architecture, saved as ``transformers`` saves
them (``save_pretrained``) with the demo tokenizer: 2 layers, d_model 64, grouped-query attention and
tied embeddings where the architecture has them, sliding windows short enough to matter."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from analysis.cli import main
from analysis.live_model import LiveSpecs, load_live
from analysis.model_loading import load_model
from analysis.paths import DEMO_MODEL

D_MODEL = 64
N_LAYERS = 2
VOCAB = 8192  # the demo tokenizer's


def _configs() -> dict[str, object]:
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    rms: dict[str, Any] = {
        "hidden_size": D_MODEL,
        "intermediate_size": 128,
        "num_hidden_layers": N_LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "bos_token_id": 8190,
        "eos_token_id": 8190,
        "pad_token_id": 8191,
    }
    gemma: dict[str, Any] = rms | {"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8}
    return {
        "gpt2": GPT2Config(
            n_embd=D_MODEL,
            n_layer=N_LAYERS,
            n_head=4,
            n_positions=256,
            vocab_size=VOCAB,
            bos_token_id=8190,
            eos_token_id=8190,
            pad_token_id=8191,
        ),
        "pythia": GPTNeoXConfig(**rms | {"num_key_value_heads": 4, "rotary_pct": 0.25}, tie_word_embeddings=False),
        "llama3": LlamaConfig(
            **rms,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        ),
        "mistral": MistralConfig(**rms, sliding_window=8, tie_word_embeddings=False),
        "gemma2": Gemma2Config(**gemma),
        "gemma3": Gemma3TextConfig(**gemma, rope_local_base_freq=10000.0, rope_theta=1000000.0),
        "qwen2.5": Qwen2Config(**rms, tie_word_embeddings=True, rope_theta=1000000.0),
        "qwen3": Qwen3Config(**rms, head_dim=16, tie_word_embeddings=True, rope_theta=1000000.0),
    }


ARCHITECTURES = ("gpt2", "pythia", "llama3", "mistral", "gemma2", "gemma3", "qwen2.5", "qwen3")
CLASS_NAMES = {
    "gpt2": "GPT2LMHeadModel",
    "pythia": "GPTNeoXForCausalLM",
    "llama3": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "qwen2.5": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def save_tiny_model(name: str, folder: Path, config: object | None = None) -> Path:
    """A random-initialised ``name`` model (or one of ``config``) saved into ``folder`` with the demo
    tokenizer files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or _configs()[name]
    torch.manual_seed(sum(map(ord, name)))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # norms' gains away from their initial 1 (or 0 for Gemma's 1 + w), so they matter
        for param_name, param in model.named_parameters():
            if "norm" in param_name or "ln" in param_name:
                param.add_(0.2 * torch.randn_like(param))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(DEMO_MODEL).save_pretrained(folder)
    return folder


def put_in_hf_cache(folder: Path, hf_home: Path, repo_id: str, revision: str = "0" * 40) -> None:
    """Copy a model folder to where ``hf_hub_download`` would have put ``repo_id``'s files."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


@torch.no_grad()
def save_tiny_saes(model, folder: Path, seed: int = 0) -> Path:
    """sae-lens JumpReLU SAEs and transcoders for a loaded HookedTransformer, saved with sae-lens's
    own ``save_model``: a residual SAE at the last layer's input and a transcoder per layer
    (``ln2.hook_normalized`` -> ``hook_mlp_out``). Random weights, the encoder scaled so that
    pre-activations have unit spread on the model's real activations and thresholds of 0.5, so
    about a third of the latents fire on each token."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig

    generator = torch.Generator().manual_seed(seed)
    d_model, last = model.cfg.d_model, model.cfg.n_layers - 1
    tokens = torch.tensor([[8190, *range(100, 160)]], device=model.cfg.device)
    _, cache = model.run_with_cache(tokens)

    def fill(sae, d_sae: int, hook_in: str) -> None:
        scale = cache[hook_in][0, 1:].float().pow(2).mean().sqrt()
        sae.W_enc.copy_(torch.randn(d_model, d_sae, generator=generator) / (d_model**0.5 * scale))
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(d_sae, d_model, generator=generator), dim=1))
        sae.b_enc.zero_()
        sae.b_dec.copy_(0.01 * torch.randn(d_model, generator=generator))
        sae.threshold.fill_(0.5)

    resid = f"blocks.{last}.hook_resid_pre"
    sae = JumpReLUSAE(
        JumpReLUSAEConfig(d_in=d_model, d_sae=128, apply_b_dec_to_input=False, metadata=SAEMetadata(hook_name=resid))
    )
    fill(sae, 128, resid)
    sae.save_model(folder / f"resid-L{last}")
    for layer in range(model.cfg.n_layers):
        hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
        d_sae = 96 + 32 * layer  # different widths: circuit-tracer pads them to one
        transcoder = JumpReLUTranscoder(
            JumpReLUTranscoderConfig(
                d_in=d_model,
                d_sae=d_sae,
                d_out=d_model,
                apply_b_dec_to_input=False,
                metadata=SAEMetadata(hook_name=hook_in, hook_name_out=hook_out),
            )
        )
        fill(transcoder, d_sae, hook_in)
        transcoder.save_model(folder / f"transcoder-L{layer}")
    return folder


class TinyModels:
    """Each architecture's folder, SAE folder, live model and atlas, built on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._live: dict[str, object] = {}
        self._atlas: dict[str, Path] = {}

    def folder(self, name: str) -> Path:
        folder = self.root / name
        if not folder.exists():
            save_tiny_model(name, folder)
        return folder

    def saes(self, name: str) -> Path:
        folder = self.root / f"{name}-saes"
        if not folder.exists():
            save_tiny_saes(load_model(str(self.folder(name)), device="cpu").model, folder)
        return folder

    def live(self, name: str):
        if name not in self._live:
            specs = LiveSpecs(model=str(self.folder(name)), saes=(str(self.saes(name)),))
            self._live[name] = load_live(specs, device="cpu")
        return self._live[name]

    def atlas(self, name: str) -> Path:
        """``saescope precompute`` over 8 windows of 32 demo-corpus tokens (top_k 20 >= windows, so
        every window a latent fires in is kept, and the windows table holds the whole pass)."""
        if name not in self._atlas:
            out = self.root / f"{name}.duckdb"
            args = ["precompute", "--model", str(self.folder(name)), "--sae", str(self.saes(name))]
            args += ["--tokens", "256", "--context", "32", "--batch", "4", "--out", str(out), "--device", "cpu"]
            assert main(args) == 0
            self._atlas[name] = out
        return self._atlas[name]


def assert_edges_equal_a_frozen_intervention(model, graph, sources: int = 8) -> None:
    """As tests/test_graphs.py: zeroing one source feature with attention, norm scales and every
    transcoder output frozen changes each target feature's pre-activation (and each demeaned target
    logit) by minus its edge weight."""
    ids = graph.input_tokens
    n_layers, n_features = graph.cfg.n_layers, len(graph.selected_features)
    base_logits, base_pre = model.get_activations(ids, apply_activation_function=False)
    targets = graph.active_features[graph.selected_features]
    checked = 0
    for source in torch.randperm(n_features, generator=torch.Generator().manual_seed(0))[:sources].tolist():
        layer, position, latent = graph.active_features[graph.selected_features[source]].tolist()
        logits, pre = model.feature_intervention(
            ids, [(layer, position, latent, 0.0)], constrained_layers=range(n_layers), apply_activation_function=False
        )
        measured = (base_pre - pre)[targets[:, 0], targets[:, 1], targets[:, 2]]
        torch.testing.assert_close(graph.adjacency_matrix[:n_features, source], measured, atol=1e-3, rtol=1e-3)
        change = (base_logits - logits)[0, -1]
        logit_ids = graph.logit_token_ids
        expected = (change - change.mean())[logit_ids]
        torch.testing.assert_close(graph.adjacency_matrix[-len(logit_ids) :, source], expected, atol=1e-3, rtol=1e-3)
        checked += int((measured.abs() > 1e-3).sum())
    assert checked > 0
