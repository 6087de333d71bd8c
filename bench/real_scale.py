"""SAEscope at real model shapes, on random-initialised models (no download): GPT-2 small's shape
(12 layers, d_model 768) and Gemma-2-2B's layer shape (d_model 2304, d_mlp 9216, 8 heads of 256,
4 key/value heads; ``--layers`` of them), with the demo tokenizer's 8,192-token vocabulary (so the
embedding and unembedding are smaller than the real models'). Each gets a JumpReLU SAE of
``--latents`` latents at the middle layer's residual stream, and for the graph a JumpReLU transcoder
of that width at every layer (ln2.hook_normalized -> hook_mlp_out); encoders scaled to unit-spread
pre-activations and thresholds set so that about ``--l0`` latents fire per token, as in trained
SAEs (an L0 in the tens; a third of 24k latents firing would make every stage slower than real).

Measured, in this order: ``precompute`` (the real run: tokens/s and token-latents/s of the
streaming pass, total seconds including logit effects and exact neighbours, peak RSS, atlas bytes
per million tokens), steering (seconds per generated token, steered and plain, additive at the SAE),
and the attribution graph of an 18-token prompt (circuit-tracer, every layer's transcoder).

    .venv/bin/python -m bench.real_scale --shape gpt2-small --latents 24576 --tokens 1024
    .venv/bin/python -m bench.real_scale --shape gemma-2-2b --layers 2 --latents 65536 --tokens 1024
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from analysis.atlas.precompute import run_precompute
from analysis.atlas.run_config import PrecomputeConfig
from analysis.live_model import LiveSpecs, load_live
from analysis.model_loading import load_model
from analysis.sampling import GenerationSettings
from analysis.steering import generate
from analysis.steering_target import SteeringTarget
from tests.arch_models import save_tiny_model

PROMPT = "And the king said unto his servants, Let there be light upon the face of the"  # 18 tokens with BOS


def model_config(shape: str, layers: int):
    from transformers import Gemma2Config, GPT2Config

    special: dict[str, Any] = {"bos_token_id": 8190, "eos_token_id": 8190, "pad_token_id": 8191, "vocab_size": 8192}
    if shape == "gpt2-small":
        return GPT2Config(n_embd=768, n_layer=layers or 12, n_head=12, n_positions=1024, **special)
    return Gemma2Config(
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=layers or 2,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=4096,
        max_position_embeddings=8192,
        **special,
    )


@torch.no_grad()
def save_saes(model, folder: Path, latents: int, l0: int, transcoders: bool) -> None:
    """The residual SAE (and, for the graph, a transcoder per layer) in sae-lens's disk format."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig

    d_model, middle = model.cfg.d_model, model.cfg.n_layers // 2
    _, cache = model.run_with_cache(torch.tensor([[8190, *range(100, 160)]]))
    generator = torch.Generator().manual_seed(0)
    threshold = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1 - l0 / latents)))

    def fill(sae, hook_in: str) -> None:
        scale = cache[hook_in][0, 1:].float().pow(2).mean().sqrt()
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn(latents, d_model, generator=generator), dim=1))
        sae.W_enc.copy_(sae.W_dec.T / scale)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.threshold.fill_(threshold)

    hook = f"blocks.{middle}.hook_resid_post"
    sae = JumpReLUSAE(
        JumpReLUSAEConfig(d_in=d_model, d_sae=latents, apply_b_dec_to_input=False, metadata=SAEMetadata(hook_name=hook))
    )
    fill(sae, hook)
    sae.save_model(folder / "saes" / "resid")
    for layer in range(model.cfg.n_layers if transcoders else 0):
        hook_in, hook_out = f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out"
        metadata = SAEMetadata(hook_name=hook_in, hook_name_out=hook_out)
        transcoder = JumpReLUTranscoder(
            JumpReLUTranscoderConfig(
                d_in=d_model, d_sae=latents, d_out=d_model, apply_b_dec_to_input=False, metadata=metadata
            )
        )
        fill(transcoder, hook_in)
        transcoder.save_model(folder / "transcoders" / f"L{layer:02d}")


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--shape", choices=("gpt2-small", "gemma-2-2b"), default="gpt2-small")
    parser.add_argument("--layers", type=int, default=0, help="default: 12 for gpt2-small, 2 for gemma-2-2b")
    parser.add_argument("--latents", type=int, default=24576)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--l0", type=int, default=64, help="latents firing per token (about)")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--steer-tokens", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma-separated: precompute, steer, graph")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(
        f"{args.shape}, {args.latents:,} latents, {args.tokens:,} tokens of context {args.context}, {args.device}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        save_tiny_model(args.shape, root / "model", model_config(args.shape, args.layers))
        model = load_model(str(root / "model"), device="cpu").model
        print(f"model: {model.cfg.n_layers} layers, d_model {model.cfg.d_model}, {model.cfg.n_params:,} parameters")
        save_saes(model, root, args.latents, args.l0, transcoders="graph" not in skip)
        del model
        if "precompute" not in skip:
            out = root / "atlas.duckdb"
            config = PrecomputeConfig(
                model=str(root / "model"),
                saes=(str(root / "saes"),),
                corpus="demo",
                tokens=args.tokens,
                out=out,
                context=args.context,
                batch_windows=8,
                device=args.device,
            )
            summary = run_precompute(config)
            tokens, seconds = summary["tokens"], summary["pass_seconds"]
            print(
                f"precompute: {tokens / seconds:,.0f} tokens/s, {tokens * args.latents / seconds:,.0f} token-latents/s "
                f"(streaming pass {seconds:.1f} s; whole run {summary['seconds']} s with logit effects and exact "
                f"neighbours), peak RSS {rss_mb():,.0f} MB, atlas {out.stat().st_size / 1e6:.1f} MB, "
                f"{out.stat().st_size / tokens * 1e6 / 1e9:.1f} GB per million tokens at this token count (the "
                "per-latent tables are fixed, so more tokens cost less per token)"
            )
        if not {"steer", "graph"} <= skip:
            saes = (str(root / "saes"),) + (() if "graph" in skip else (str(root / "transcoders"),))
            live = load_live(LiveSpecs(model=str(root / "model"), saes=saes), device=args.device)
        if "steer" not in skip:
            settings = GenerationSettings(max_new_tokens=args.steer_tokens, use_kv_cache=True)
            generate(live, PROMPT, settings)  # warm-up
            plain = generate(live, PROMPT, settings)
            steered = generate(live, PROMPT, settings, [SteeringTarget("resid", 0, 8.0)], "additive")
            per_plain, per_steered = plain.seconds / len(plain.ids), steered.seconds / len(steered.ids)
            print(
                f"steering: {per_steered:.3f} s/token steered, {per_plain:.3f} s/token plain "
                f"(ratio {per_steered / per_plain:.2f}, {len(steered.ids)} tokens), peak RSS {rss_mb():,.0f} MB"
            )
        if "graph" not in skip:
            from analysis.graphs import GraphSettings, compute_graph

            started = time.perf_counter()
            result = compute_graph(live, PROMPT, settings=GraphSettings())
            print(
                f"graph: {len(result.tokens)} tokens in {time.perf_counter() - started:.1f} s "
                f"(attribution {result.seconds:.1f} s), peak RSS {rss_mb():,.0f} MB"
            )


if __name__ == "__main__":
    main()
