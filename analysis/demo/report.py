"""Write the bundle's README.md and SOURCES.md from the numbers the build measured."""

from __future__ import annotations

from pathlib import Path

import torch
from transformer_lens import HookedTransformer

from analysis.demo.corpus import SOURCES

DOMAIN_PROMPTS = {
    "bible": "And the LORD said unto Moses,",
    "python-docs": "The :func:`open` function returns",
    "linux-docs": "The kernel driver registers",
    "fortunes": "A man who",
    "dictionary": "Horse \\Horse\\, n.",
}
FLOORS = {"explained_variance": 0.7, "mean_l0": 64, "dead_fraction": 0.2}


@torch.no_grad()
def generations_per_domain(model: HookedTransformer, new_tokens: int = 40) -> dict[str, dict[str, list[str]]]:
    """One greedy and two sampled (temperature 0.8, fixed seeds) continuations of a prompt per domain."""
    result = {}
    for domain, prompt in DOMAIN_PROMPTS.items():
        greedy = model.generate(prompt, max_new_tokens=new_tokens, do_sample=False, verbose=False)
        sampled = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            sampled.append(model.generate(prompt, max_new_tokens=new_tokens, temperature=0.8, verbose=False))
        result[domain] = {"prompt": prompt, "greedy": [greedy], "sampled": sampled}
    return result


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in text.replace("<|endoftext|>", "⏎EOS⏎").splitlines())


def floors_met(sae: dict) -> dict[str, bool]:
    return {
        "explained_variance": sae["explained_variance"] >= FLOORS["explained_variance"],
        "mean_l0": sae["mean_l0"] <= FLOORS["mean_l0"],
        "dead_fraction": sae["dead"] / sae["d_sae"] <= FLOORS["dead_fraction"],
    }


def write_sources(metrics: dict, path: Path) -> None:
    lines = [
        "# Sources of the demo corpus",
        "",
        "Every document is rebuilt by `python -m analysis demo` from files that these Debian packages",
        "install (`apt-get install bible-kjv bible-kjv-text python3.11-doc linux-doc-6.1 fortunes dict-gcide`).",
        "`corpus_manifest.jsonl.gz` lists each document's id, domain, source file, split and SHA-256;",
        f"a document is held out when the hash of its id falls in the first {18}% of buckets.",
        "Token counts are in the demo tokenizer's tokens (documents are joined by `<|endoftext|>`).",
        "",
        "| domain | Debian package | licence | what | documents | train tokens | held-out tokens |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for source in SOURCES:
        counts = metrics["corpus"][source.domain]
        lines.append(
            f"| {source.domain} | `{source.package}` | {source.licence} | {source.description} | "
            f"{counts['documents']:,} | {counts['train']:,} | {counts['heldout']:,} |"
        )
    total_train = sum(c["train"] for c in metrics["corpus"].values())
    total_heldout = sum(c["heldout"] for c in metrics["corpus"].values())
    lines += ["", f"Total: {total_train:,} training tokens, {total_heldout:,} held-out tokens.", ""]
    path.write_text("\n".join(lines))


def write_readme(metrics: dict, path: Path) -> None:
    model = metrics["model"]
    lines = [
        "# The SAEscope demo bundle",
        "",
        "Everything here was made by `python -m analysis demo` from openly licensed text (see",
        "[SOURCES.md](SOURCES.md)); every number below was measured by that build and is read from",
        "`build_metrics.json`.",
        "",
        "## Model (`model/`)",
        "",
        f"A GPT-2-architecture causal LM trained from scratch: {model['n_layer']} layers, d_model {model['d_model']}, "
        f"{model['n_head']} heads, context {model['n_ctx']}, vocabulary {metrics['vocab_size']:,} "
        "(byte-level BPE trained on the training split with Hugging Face `tokenizers`; "
        "`<|endoftext|>` is BOS/EOS with id 8190, `<|pad|>` is 8191).",
        "",
        "| | |",
        "|---|---|",
        f"| parameters | {model['parameters']:,} |",
        f"| tokens seen in training | {model['tokens_seen']:,} ({model['steps']:,} steps on {model['device']}, "
        f"{model['train_seconds'] / 60:.0f} min) |",
        f"| held-out loss (nats/token, {model['heldout_eval_tokens']:,} tokens) | {model['heldout_loss']:.3f} |",
        f"| unigram baseline on the held-out split | {model['unigram_heldout_loss']:.3f} |",
        "",
        "### Generations (40 new tokens; greedy, then two samples at temperature 0.8)",
        "",
    ]
    for domain, gens in metrics["generations"].items():
        lines += [f"**{domain}** — prompt `{gens['prompt']}`", ""]
        for kind in ("greedy", "sampled"):
            for text in gens[kind]:
                lines += [f"*{kind}*:", "", _quote(text), ""]
    lines += [
        "## SAEs and transcoders (`saes/`)",
        "",
        "Trained with sae-lens (BatchTopK, saved as JumpReLU in sae-lens's disk format) on activations of",
        f"{metrics['sae_training']['activation_tokens']:,} training-split tokens, "
        f"{metrics['sae_training']['training_tokens_per_sae']:,} samples each, batch "
        f"{metrics['sae_training']['batch_size']}, learning rates "
        + ", ".join(f"{n} {lr:g}" for n, lr in sorted(metrics["sae_training"]["learning_rates"].items()))
        + ". Measured on "
        f"{metrics['sae_eval_tokens']:,} held-out tokens (special tokens excluded; CE losses on the first "
        f"{metrics['sae_ce_eval_tokens']:,}).",
        f"Floors: explained variance ≥ {FLOORS['explained_variance']}, mean L0 ≤ {FLOORS['mean_l0']}, "
        f"dead ≤ {FLOORS['dead_fraction']:.0%}.",
        "",
        "| name | d_sae | mean L0 | explained variance | CE loss recovered | dead | dense (>10%) | floors |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, sae in metrics["saes"].items():
        met = "met" if all(floors_met(sae).values()) else "NOT met"
        lines.append(
            f"| {name} | {sae['d_sae']} | {sae['mean_l0']:.1f} | {sae['explained_variance']:.3f} | "
            f"{sae['ce_loss_recovered']:.3f} | {sae['dead']} | {sae['dense']} | {met} |"
        )
    lines += [
        "",
        "CE loss recovered = (CE_zero_ablation − CE_with_SAE) / (CE_zero_ablation − CE_clean), with the",
        "reconstruction spliced in at the hook the SAE writes to (a transcoder replaces the MLP output).",
        "",
    ]
    path.write_text("\n".join(lines))
