"""The Steer page's targets (analysis/steering_target.py's ``SteeringTarget``, which also reads and
writes them in the URL) in its widgets, and as the atlas describes them (max activation, automatic
label). Torch-free: the feature page links here without loading a model."""

from __future__ import annotations

import streamlit as st

from analysis.atlas import reader
from analysis.atlas.reader import LatentSummary
from analysis.steering_target import DEFAULT_COEFFICIENT_MULTIPLIER, SteeringTarget
from dashboard.shell.workspace import Atlas, Workspace


def coefficient_key(target: SteeringTarget) -> str:
    """The session-state key of a target's number field (its slider's is this + ``_slider``)."""
    return f"coef_{target.sae}_{target.latent}"


def set_coefficients(targets: list[SteeringTarget]) -> None:
    """Put each target's coefficient into its slider and number field (before they are drawn)."""
    for target in targets:
        key = coefficient_key(target)
        assert target.coefficient is not None, "the Steer page fills in each default before it keeps a target"
        st.session_state[key] = st.session_state[key + "_slider"] = float(target.coefficient)


def latent_summary(workspace: Workspace, atlas: Atlas, sae_name: str, latent: int) -> LatentSummary | None:
    """``analysis.atlas.reader.latent_summary`` through the workspace's connection to ``atlas``."""
    return reader.latent_summary(workspace.atlas_cursor(atlas), sae_name, latent)


def scale_caption(coefficient: float, max_act: float) -> str:
    """A coefficient on the scale that makes it comparable across latents: as a multiple of the
    latent's largest activation in the atlas (the default is ``DEFAULT_COEFFICIENT_MULTIPLIER`` ×)."""
    default = f"default ×{DEFAULT_COEFFICIENT_MULTIPLIER:g}"
    if max_act <= 0:
        return f"{coefficient:g}; this latent never fired in the atlas (max activation 0), so there is no scale"
    return (
        f"{coefficient:g} = ×{coefficient / max_act:.2f} of its max activation {max_act:.4g} in the atlas ({default})"
    )
