"""Write a watchlist from a feature list: each feature with its decoder row's hash and the row itself
(so a retrained SAE's matching latent can be found), and one check per feature that its mean activation
on the given texts rises by at most a fraction of the mean measured now, on this model. Run later in
CI without a baseline model, that check compares against the number recorded here."""

from __future__ import annotations

import pandas as pd

from analysis.governance.watch_checks import Resolved, decoder_rows, mean_activation
from analysis.governance.watchlist_file import encode_row, row_sha256, to_toml
from analysis.live_model import LiveModel
from analysis.steering_target import SteeringTarget


def list_targets(items: pd.DataFrame, sae_hashes: dict[str, str]) -> tuple[list[SteeringTarget], int]:
    """A saved feature list's items (``UserStore.list_items``) as features of the loaded SAEs, each
    found by the content hash the list recorded (a latent number means a feature only on those
    weights); and how many items are on no loaded SAE."""
    by_hash = {content: name for name, content in sae_hashes.items()}
    targets = [
        SteeringTarget(by_hash[sae_hash], int(latent))
        for sae_hash, latent in zip(items["sae_hash"], items["latent"])
        if sae_hash in by_hash
    ]
    return targets, len(items) - len(targets)


def feature_id(target: SteeringTarget) -> str:
    return f"{target.sae}-{target.latent}"


def build_watchlist(
    live: LiveModel,
    targets: list[SteeringTarget],
    texts: list[str],
    name: str,
    max_rise_fraction: float,
    labels: dict[tuple[str, int], str] | None = None,
) -> str:
    """The watchlist's TOML text; LiveInputError for a latent the loaded SAEs do not have."""
    features, checks = [], []
    for target in dict.fromkeys(SteeringTarget(t.sae, t.latent) for t in targets):
        loaded = live.check_latent(target.sae, target.latent)
        row = decoder_rows(loaded)[target.latent]
        ident = feature_id(target)
        features.append(
            {
                "id": ident,
                "sae": target.sae,
                "latent": target.latent,
                "label": (labels or {}).get((target.sae, target.latent)),
                "decoder_sha256": row_sha256(row),
                "decoder_row": encode_row(row),
            }
        )
        if texts:
            mean, _ = mean_activation(live, Resolved(ident, target.sae, target.latent, 1.0, "hash"), tuple(texts))
            checks.append(
                {
                    "id": f"{ident}-mean-rise",
                    "feature": ident,
                    "expect": "mean_rise_at_most",
                    "max_rise_fraction": max_rise_fraction,
                    "baseline_mean": mean,
                    "texts": texts,
                }
            )
    description = f"built from {len(features)} features on model {live.model_hash[:16]}"
    return to_toml(name, description, features, checks)
