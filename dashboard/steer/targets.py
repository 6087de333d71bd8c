"""The latents a steering run turns up or down, as the Steer page keeps them in its URL
(``steer=SAE:LATENT:COEFFICIENT``, repeated) and as the atlas describes them (max activation,
automatic label). Torch-free: the feature page links here without loading a model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st

from dashboard.shell.workspace import Atlas, Workspace


@dataclass(frozen=True)
class ChosenLatent:
    """One latent to steer; ``coefficient`` None means "the default for its max activation"."""

    sae_name: str
    latent: int
    coefficient: float | None = None

    def url_value(self) -> str:
        coefficient = "" if self.coefficient is None else f":{self.coefficient:g}"
        return f"{self.sae_name}:{self.latent}{coefficient}"


def parse_url_value(value: str) -> ChosenLatent | None:
    """``SAE:LATENT[:COEFFICIENT]`` (SAE names may hold colons, so it splits from the right);
    None for anything malformed, which the page reports rather than failing on."""
    for pieces in (3, 2):  # with a coefficient, then without
        parts = value.rsplit(":", pieces - 1)
        if len(parts) != pieces or not parts[0]:
            continue
        try:
            latent = int(parts[1])
            coefficient = float(parts[2]) if pieces == 3 else None
        except ValueError:
            continue
        if coefficient is not None and not math.isfinite(coefficient):
            return None
        return ChosenLatent(parts[0], latent, coefficient)
    return None


def coefficient_key(target: ChosenLatent) -> str:
    """The session-state key of a target's number field (its slider's is this + ``_slider``)."""
    return f"coef_{target.sae_name}_{target.latent}"


def set_coefficients(targets: list[ChosenLatent]) -> None:
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
