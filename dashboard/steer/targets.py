"""The Steer page's targets (analysis/steering_target.py's ``SteeringTarget``, which also reads and
writes them in the URL) in its widgets, and as the atlas describes them (max activation, automatic
label). Torch-free: the feature page links here without loading a model."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from analysis.steering_target import SteeringTarget
from dashboard.shell.workspace import Atlas, Workspace


def coefficient_key(target: SteeringTarget) -> str:
    """The session-state key of a target's number field (its slider's is this + ``_slider``)."""
    return f"coef_{target.sae}_{target.latent}"


def set_coefficients(targets: list[SteeringTarget]) -> None:
    """Put each target's coefficient into its slider and number field (before they are drawn)."""
    for target in targets:
        key = coefficient_key(target)
        st.session_state[key] = st.session_state[key + "_slider"] = float(target.coefficient)


@dataclass(frozen=True)
class LatentSummary:
    """What the atlas says of a latent: enough to label it and scale its default coefficient."""

    sae: int
    latent: int
    max_act: float
    density: float
    label: str


def latent_summary(workspace: Workspace, atlas: Atlas, sae_name: str, latent: int) -> LatentSummary | None:
    """The atlas's row for a latent, or None when the atlas has no such SAE or latent."""
    sae = atlas.sae_index(sae_name)
    if sae is None:
        return None
    row = (
        workspace.cursor()
        .execute(
            f"SELECT max_act, density, label FROM {atlas.alias}.features WHERE sae = ? AND latent = ?",
            [sae, int(latent)],
        )
        .fetchone()
    )
    if row is None:
        return None
    return LatentSummary(sae=sae, latent=int(latent), max_act=float(row[0]), density=float(row[1]), label=row[2] or "")
