"""The latents a steering run turns up or down, as the Steer page keeps them in its URL
(``steer=SAE:LATENT:COEFFICIENT``, repeated) and as the atlas describes them (max activation,
automatic label). Torch-free: the feature page links here without loading a model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st

from analysis.atlas import reader
from analysis.atlas.reader import LatentSummary
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


def latent_summary(workspace: Workspace, atlas: Atlas, sae_name: str, latent: int) -> LatentSummary | None:
    """``analysis.atlas.reader.latent_summary`` through the workspace's connection to ``atlas``."""
    return reader.latent_summary(workspace.atlas_cursor(atlas), sae_name, latent)
