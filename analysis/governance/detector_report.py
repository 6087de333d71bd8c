"""The text the detector CLI prints: a trained detector against its baselines, and scored texts.

Texts and tokens come from users; they are printed with control characters escaped (as JSON
string bodies), so a hostile text cannot move the cursor or hide what follows in a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from analysis.governance.detector_metrics import METHODS
from analysis.governance.detector_run import TextScore

SHOWN_FEATURES = 20
TOP_TOKENS = 5  # the tokens scoring highest, listed under each text


def _plain(text: str, limit: int | None = None) -> str:
    shown = json.dumps(text, ensure_ascii=False)[1:-1]
    return shown if limit is None or len(shown) <= limit else shown[: limit - 1] + "…"


def print_training(detector: dict, metrics: dict, out: Path) -> None:
    split = metrics["split"]
    print(
        f"detector on {detector['sae']['name']} ({detector['hook']}, {detector['pool']}-pooled): "
        f"{len(detector['features'])} features; held-out split {split['test']} rows "
        f"({split['test_positives']} positive), trained on {split['train']}"
    )
    print(f"{'method':<14}{'precision':>10}{'recall':>8}{'F1':>7}{'AUROC':>7}  features")
    for name, row in metrics["methods"].items():
        features = row.get("features", "")
        print(
            f"{name:<14}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>7.3f}{row['auroc']:>7.3f}  {features}"
        )
    for name in metrics["methods"]:
        print(f"  {name}: {METHODS[name]}")
    _print_tokens(metrics)
    cost = metrics.get("cost")
    if cost:
        print(
            f"cost per 1,000 texts ({cost['texts']} timed, {cost['device']}, load {cost['load_average_1min']}): "
            f"detector {cost['detector_ms_per_1000_texts']:.1f} ms ({cost['blocks_run']} of {cost['n_layers']} blocks, "
            f"encode, dot), full forward {cost['full_forward_ms_per_1000_texts']:.1f} ms "
            f"-> {cost['full_over_detector']:.2f}x"
        )
    print(f"features (largest |weight| first; {min(SHOWN_FEATURES, len(detector['features']))} shown):")
    for feature in detector["features"][:SHOWN_FEATURES]:
        label = f"  {_plain(feature['label'], 50)}" if feature["label"] else ""
        print(f"  {feature['latent']:>6} {feature['weight']:+9.4f}  {feature['url']}{label}")
    print(f"written: {out / 'detector.json'}, {out / 'metrics.json'}")


def _print_tokens(metrics: dict) -> None:
    """The token-level table, or why there is none (rows without spans)."""
    tokens = metrics.get("tokens")
    if not tokens:
        print(f"per-token: not scored ({metrics.get('tokens_skipped') or 'no spans'})")
        return
    counts = tokens["tokens"]
    print(
        f"per-token, held-out split ({counts['test']} tokens of {tokens['rows']['test']} rows, "
        f"{counts['test_positive']} inside a span; threshold chosen on the training split's {counts['train']} tokens):"
    )
    print(f"{'method':<14}{'precision':>10}{'recall':>8}{'F1':>7}{'AUROC':>7}  threshold")
    for name, row in tokens["methods"].items():
        chosen = "fixed" if row["threshold_from"] == "fixed" else "train split"
        print(
            f"{name:<14}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>7.3f}{row['auroc']:>7.3f}  "
            f"{row['threshold']:.3f} ({chosen})"
        )


def print_scores(scores: Sequence[TextScore], threshold: float) -> None:
    for result in scores:
        verdict = "FLAGGED" if result.flagged else "clear"
        print(f"{result.score:.3f} {verdict:<7} {_plain(result.text, 80)}")
        if result.cut:
            print(f"  (its first {result.cut} tokens were cut to fit the model's context)")
        first = int(result.has_bos)
        tokens = [
            f"[{_plain(t)}]{s:.2f}" if s >= threshold else _plain(t)
            for t, s in zip(result.tokens[first:], result.token_scores[first:])
        ]
        print("  tokens: " + "".join(tokens) + f"   ([token]score: at or above {threshold:g})")
        body = list(zip(result.token_scores[first:], range(first, len(result.tokens))))
        top = sorted(body, key=lambda pair: -pair[0])[:TOP_TOKENS]
        print("  highest: " + ", ".join(f"[{_plain(result.tokens[i])}] {s:.3f}" for s, i in top))
