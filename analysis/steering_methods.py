"""The steering methods, as one table: name, the help text the Steer page and ``saescope steer``
show, the SAE capabilities a method needs (analysis/sae_capabilities.py), and the factory that turns
the targets into forward hooks. The page's method choice and the command line's ``--method`` are
built from ``METHODS``; adding a row here is all a new method needs (see docs/ARCHITECTURE.md).

Every hook sits where the SAE writes (``hook_name`` for a plain SAE, ``hook_name_out`` for a
transcoder) and acts on every position it is given, prompt and generated tokens alike. The hooks
return new tensors rather than editing in place, because the activation they receive may be the
same storage as one another hook (or a cache) already holds.

No torch import: the factories only call tensor methods (analysis/steering_hooks.py runs them
under ``torch.no_grad``), so the command line can read the table without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from analysis.live_errors import LiveInputError
from analysis.sae_capabilities import Capability

if TYPE_CHECKING:
    from torch import Tensor

    from analysis.sae_loading import LoadedSAE
    from analysis.sampling import ForwardHook


@dataclass(frozen=True)
class SAETargets:
    """The targets of one SAE: its latent ids and their coefficients, on the SAE's device and dtype."""

    loaded: LoadedSAE
    latents: Tensor
    values: Tensor

    @property
    def rows(self) -> Tensor:
        """The targets' decoder rows."""
        return self.loaded.sae.W_dec[self.latents]

    @property
    def writes(self) -> str:
        """The hook where the SAE writes, which is where it is steered."""
        return self.loaded.hook_name_out or self.loaded.hook_name


@dataclass(frozen=True)
class SteeringMethod:
    name: str
    help: str
    hooks: Callable[[Sequence[SAETargets]], list[ForwardHook]]  # targets grouped by SAE, in order
    needs: tuple[Capability, ...] = ()

    @property
    def summary(self) -> str:
        """The help text with what the method needs of an SAE, as the page and the command line show it."""
        needs = f" (needs: {', '.join(c.value for c in self.needs)})" if self.needs else ""
        return self.help + needs


def _add(delta: Tensor) -> Callable[..., Tensor]:
    def hook(activation: Tensor, hook) -> Tensor:
        return activation + delta.to(activation.dtype)

    return hook


def _additive(groups: Sequence[SAETargets]) -> list[ForwardHook]:
    """One summed vector per hook, however many targets and SAEs write there."""
    deltas: dict[str, Tensor] = {}
    for group in groups:
        delta = group.values @ group.rows
        deltas[group.writes] = deltas[group.writes] + delta if group.writes in deltas else delta
    return [(name, _add(delta)) for name, delta in deltas.items()]


def _set_component(directions: Tensor, values: Tensor) -> Callable[..., Tensor]:
    def hook(activation: Tensor, hook) -> Tensor:
        for direction, value in zip(directions.to(activation.dtype), values.to(activation.dtype)):
            activation = activation + (value - activation @ direction)[..., None] * direction
        return activation

    return hook


def _replace(groups: Sequence[SAETargets]) -> list[ForwardHook]:
    hooks: list[ForwardHook] = []
    for group in groups:
        rows = group.rows
        norms = rows.norm(dim=-1, keepdim=True)
        if not bool((norms > 0).all()):
            raise LiveInputError(
                f"{group.loaded.name} has a latent with an all-zero decoder row: it has no direction to replace along"
            )
        hooks.append((group.writes, _set_component(rows / norms, group.values)))
    return hooks


def _clamp_hook(group: SAETargets, sae_input: Callable[[Tensor], Tensor]) -> Callable[..., Tensor]:
    """Encode the SAE's input, set the latents, decode, add back the SAE's error. With an affine
    decoder (a capability clamp needs) that is the activation plus the change of each latent times its
    decoder row: no full decode needed."""
    encode, latents, values, rows = group.loaded.sae.encode, group.latents, group.values, group.rows

    def hook(activation: Tensor, hook) -> Tensor:
        current = encode(sae_input(activation))[..., latents]
        return activation + ((values - current) @ rows).to(activation.dtype)

    return hook


def _transcoder_input(loaded: LoadedSAE) -> tuple[ForwardHook, Callable[[Tensor], Tensor]]:
    """A hook that keeps the transcoder's input of this forward pass (it fires before the output
    hook in the same block), and the function the clamp hook reads it with."""
    seen: dict[str, Tensor] = {}

    def keep(activation: Tensor, hook) -> None:
        seen["input"] = activation

    return (loaded.hook_name, keep), lambda _output: seen["input"]


def _clamp(groups: Sequence[SAETargets]) -> list[ForwardHook]:
    hooks: list[ForwardHook] = []
    for group in groups:
        if group.loaded.is_transcoder:
            keep, sae_input = _transcoder_input(group.loaded)
            hooks += [keep, (group.writes, _clamp_hook(group, sae_input))]
        else:
            hooks.append((group.writes, _clamp_hook(group, lambda activation: activation)))
    return hooks


METHODS: dict[str, SteeringMethod] = {
    method.name: method
    for method in (
        SteeringMethod(
            "additive", "add coefficient × the decoder direction at the SAE's hook, on every token", _additive
        ),
        SteeringMethod("replace", "set the component along the (unit) decoder direction to the coefficient", _replace),
        SteeringMethod(
            "clamp",
            "encode, set the latent to the coefficient, decode, add back the SAE's error",
            _clamp,
            needs=(Capability.AFFINE_DECODER,),
        ),
    )
}
DEFAULT_METHOD = "additive"
