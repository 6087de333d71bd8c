"""Steering as forward hooks: the targets checked against the live model and the method's needs,
grouped by SAE, and handed to the method's hook factory (analysis/steering_methods.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from analysis.live_model import LiveInputError, LiveModel
from analysis.sae_capabilities import missing
from analysis.sampling import ForwardHook
from analysis.steering_methods import METHODS, SAETargets
from analysis.steering_target import SteeringTarget


def check_targets(live: LiveModel, targets: Sequence[SteeringTarget], method: str) -> None:
    """LiveInputError, in one line, for an unknown method, no targets, a target without a coefficient,
    a latent no loaded SAE has, or an SAE without a capability the method needs."""
    if method not in METHODS:
        raise LiveInputError(f"unknown steering method {method!r}; choose from {', '.join(METHODS)}")
    if not targets:
        raise LiveInputError("choose at least one feature to steer")
    for target in targets:
        if not isinstance(target, SteeringTarget):
            raise LiveInputError(f"a steering target must be a SteeringTarget, not {target!r}")
        if target.coefficient is None:
            raise LiveInputError(f"{target.as_text()} has no coefficient: give SAE:LATENT:COEFFICIENT")
        live.check_latent(target.sae, target.latent)
    for name in dict.fromkeys(t.sae for t in targets):
        for capability in METHODS[method].needs:
            problem = missing(live.sae(name), capability)
            if problem:
                raise LiveInputError(f"{method} needs an SAE with capability '{capability.value}': {problem}")


def _by_sae(live: LiveModel, targets: Sequence[SteeringTarget]) -> list[SAETargets]:
    """Targets grouped by SAE, in first-seen order."""
    groups = []
    for name in dict.fromkeys(t.sae for t in targets):
        loaded = live.sae(name)
        mine = [t for t in targets if t.sae == name]
        device, dtype = loaded.sae.W_dec.device, loaded.sae.W_dec.dtype
        groups.append(
            SAETargets(
                loaded,
                torch.tensor([t.latent for t in mine], device=device),
                torch.tensor([t.coefficient for t in mine], device=device, dtype=dtype),
            )
        )
    return groups


def steering_hooks(live: LiveModel, targets: Sequence[SteeringTarget], method: str) -> list[ForwardHook]:
    """The forward hooks that steer ``targets`` by ``method``; several targets add up (additive targets
    at one hook become one summed vector; replace and clamp apply one SAE after another)."""
    check_targets(live, targets, method)
    with torch.no_grad():
        return METHODS[method].hooks(_by_sae(live, targets))
