"""Steering as forward hooks: what a feature does to the activation where its SAE writes.

Every hook sits where the SAE writes (``hook_name`` for a plain SAE, ``hook_name_out`` for a
transcoder) and acts on every position it is given, prompt and generated tokens alike. The hooks
return new tensors rather than editing in place, because the activation they receive may be the
same storage as one another hook (or a cache) already holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from analysis.live_model import LiveInputError, LiveModel
from analysis.sae_loading import LoadedSAE
from analysis.sampling import ForwardHook

METHODS = ("additive", "replace", "clamp")
MAX_COEFFICIENT = 1e4


@dataclass(frozen=True)
class SteeringTarget:
    """One feature to steer: which SAE, which latent, and how strongly (meaning depends on the method:
    additive adds ``coefficient`` × its decoder row; replace and clamp set it to ``coefficient``)."""

    sae: str
    latent: int
    coefficient: float

    def __post_init__(self) -> None:
        c = self.coefficient
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise LiveInputError(f"a steering coefficient must be a finite number, not {c!r}")
        if abs(c) > MAX_COEFFICIENT:
            raise LiveInputError(f"steering coefficient {c:g} is out of range: at most ±{MAX_COEFFICIENT:g}")
        object.__setattr__(self, "coefficient", float(c))

    @classmethod
    def parse(cls, text: str) -> SteeringTarget:
        """``SAE:LATENT:COEF`` as the command line takes it (the SAE name may itself hold colons)."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise LiveInputError(f"a feature is SAE:LATENT:COEFFICIENT, e.g. resid-L2:17:40, not {text!r}")
        try:
            latent, coefficient = int(parts[1]), float(parts[2])
        except ValueError:
            raise LiveInputError(
                f"in {text!r}: the latent must be a whole number and the coefficient a number"
            ) from None
        return cls(parts[0], latent, coefficient)


def check_targets(live: LiveModel, targets: Sequence[SteeringTarget], method: str) -> None:
    """LiveInputError, in one line, for an unknown method, no targets, or a latent no loaded SAE has."""
    if method not in METHODS:
        raise LiveInputError(f"unknown steering method {method!r}; choose from {', '.join(METHODS)}")
    if not targets:
        raise LiveInputError("choose at least one feature to steer")
    for target in targets:
        if not isinstance(target, SteeringTarget):
            raise LiveInputError(f"a steering target must be a SteeringTarget, not {target!r}")
        live.check_latent(target.sae, target.latent)


def _by_sae(
    live: LiveModel, targets: Sequence[SteeringTarget]
) -> dict[str, tuple[LoadedSAE, torch.Tensor, torch.Tensor]]:
    """Targets grouped by SAE, in first-seen order: (SAE, latent ids, coefficients)."""
    names = list(dict.fromkeys(t.sae for t in targets))
    groups = {}
    for name in names:
        loaded = live.sae(name)
        mine = [t for t in targets if t.sae == name]
        device, dtype = loaded.sae.W_dec.device, loaded.sae.W_dec.dtype
        groups[name] = (
            loaded,
            torch.tensor([t.latent for t in mine], device=device),
            torch.tensor([t.coefficient for t in mine], device=device, dtype=dtype),
        )
    return groups


def _write_hook(loaded: LoadedSAE) -> str:
    return loaded.hook_name_out or loaded.hook_name


def _add(delta: torch.Tensor) -> Callable[..., torch.Tensor]:
    def hook(activation: torch.Tensor, hook) -> torch.Tensor:
        return activation + delta.to(activation.dtype)

    return hook


def _replace(directions: torch.Tensor, values: torch.Tensor) -> Callable[..., torch.Tensor]:
    def hook(activation: torch.Tensor, hook) -> torch.Tensor:
        for direction, value in zip(directions.to(activation.dtype), values.to(activation.dtype)):
            activation = activation + (value - activation @ direction)[..., None] * direction
        return activation

    return hook


def _clamp(
    loaded: LoadedSAE, latents: torch.Tensor, values: torch.Tensor, sae_input: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """Encode the SAE's input, set the latents, decode, add back the SAE's error. sae-lens decodes
    affinely (``f @ W_dec + b_dec``, no activation normalization in these SAEs), so that is the
    activation plus the change of each latent times its decoder row: no full decode needed."""
    rows = loaded.sae.W_dec[latents]

    def hook(activation: torch.Tensor, hook) -> torch.Tensor:
        current = loaded.sae.encode(sae_input(activation))[..., latents]
        return activation + ((values - current) @ rows).to(activation.dtype)

    return hook


def _transcoder_input(loaded: LoadedSAE) -> tuple[ForwardHook, Callable[[torch.Tensor], torch.Tensor]]:
    """A hook that keeps the transcoder's input of this forward pass (it fires before the output
    hook in the same block), and the function the clamp hook reads it with."""
    seen: dict[str, torch.Tensor] = {}

    def keep(activation: torch.Tensor, hook) -> None:
        seen["input"] = activation

    return (loaded.hook_name, keep), lambda _output: seen["input"]


def steering_hooks(live: LiveModel, targets: Sequence[SteeringTarget], method: str) -> list[ForwardHook]:
    """The forward hooks that steer ``targets`` by ``method``; several targets add up (additive targets
    at one hook become one summed vector; replace and clamp apply one SAE after another)."""
    check_targets(live, targets, method)
    hooks: list[ForwardHook] = []
    with torch.no_grad():
        if method == "additive":
            deltas: dict[str, torch.Tensor] = {}
            for loaded, latents, values in _by_sae(live, targets).values():
                delta = values @ loaded.sae.W_dec[latents]
                name = _write_hook(loaded)
                deltas[name] = deltas[name] + delta if name in deltas else delta
            return [(name, _add(delta)) for name, delta in deltas.items()]
        for loaded, latents, values in _by_sae(live, targets).values():
            if method == "replace":
                rows = loaded.sae.W_dec[latents]
                norms = rows.norm(dim=-1, keepdim=True)
                if not bool((norms > 0).all()):
                    raise LiveInputError(
                        f"{loaded.name} has a latent with an all-zero decoder row: it has no direction to replace along"
                    )
                hooks.append((_write_hook(loaded), _replace(rows / norms, values)))
            elif loaded.is_transcoder:
                keep, sae_input = _transcoder_input(loaded)
                hooks += [keep, (_write_hook(loaded), _clamp(loaded, latents, values, sae_input))]
            else:
                hooks.append((_write_hook(loaded), _clamp(loaded, latents, values, lambda activation: activation)))
    return hooks
