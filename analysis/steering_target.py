"""What a steering run turns up or down: one feature (SAE, latent) and its coefficient, written
``SAE:LATENT[:COEFFICIENT]`` on the command line (``--feature``) and in the Steer page's URL
(``steer=``, repeated). One type and one parser for both, and no torch: a link is read, checked and
written by pages that never load a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from numbers import Integral, Real

from analysis.live_errors import LiveInputError

MAX_COEFFICIENT = 1e4
EXAMPLE = "resid-L2:17:40"
# Default slider value = this × the latent's largest activation in the atlas (see default_coefficient).
# Measured on the demo (additive, 20 new tokens, default settings, 14 latents of density 0.5-5 %
# drawn at random, two prompts): ×4 changed the completion for 11 of 14; ×2 for 2 of 6; ×1 for 2
# of 6 (one by a single token); ×8 for 5 of 6, but turned the residual-stream latent's text into
# non-words. So ×4: a visible change for most latents that still reads as text.
DEFAULT_COEFFICIENT_MULTIPLIER = 4.0


def default_coefficient(max_act: float) -> float:
    """The slider's starting value for a latent: a multiple of its atlas max activation, because the
    same number means very different things for latents whose usual activations differ by 10×."""
    if isinstance(max_act, bool) or not isinstance(max_act, (int, float)) or not math.isfinite(max_act) or max_act < 0:
        raise LiveInputError(f"max activation must be a finite number of at least 0, not {max_act!r}")
    return min(DEFAULT_COEFFICIENT_MULTIPLIER * float(max_act), MAX_COEFFICIENT)


@dataclass(frozen=True)
class SteeringTarget:
    """One feature to steer. ``coefficient`` means what the method makes of it (additive adds it ×
    the decoder row; replace and clamp set the feature to it); None, only before steering, stands for
    "the default for the feature's max activation", which the Steer page fills in from the atlas."""

    sae: str
    latent: int
    coefficient: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sae, str) or not self.sae:
            raise LiveInputError(f"a steering target needs an SAE name, not {self.sae!r}")
        if isinstance(self.latent, bool) or not isinstance(self.latent, Integral) or self.latent < 0:
            raise LiveInputError(f"a latent is a whole number of at least 0, not {self.latent!r}")
        object.__setattr__(self, "latent", int(self.latent))  # a numpy integer from a table, too
        c = self.coefficient
        if c is None:
            return
        if isinstance(c, bool) or not isinstance(c, Real) or not math.isfinite(c):
            raise LiveInputError(f"a steering coefficient must be a finite number, not {c!r}")
        if abs(c) > MAX_COEFFICIENT:
            raise LiveInputError(f"steering coefficient {c:g} is out of range: at most ±{MAX_COEFFICIENT:g}")
        object.__setattr__(self, "coefficient", float(c))

    @classmethod
    def parse(cls, text: str, require_coefficient: bool = False) -> SteeringTarget:
        """``SAE:LATENT:COEFFICIENT`` or (unless ``require_coefficient``) ``SAE:LATENT``; split from the
        right, so an SAE name may hold colons. LiveInputError, in one line, for anything else."""
        parts = text.rsplit(":", 2)
        if len(parts) == 3 and parts[0]:
            try:
                latent, coefficient = int(parts[1]), float(parts[2])
            except ValueError:
                pass
            else:
                return cls(parts[0], latent, coefficient)
        parts = text.rsplit(":", 1)
        if not require_coefficient and len(parts) == 2 and parts[0]:
            try:
                latent = int(parts[1])
            except ValueError:
                pass
            else:
                return cls(parts[0], latent)
        if require_coefficient and text.count(":") >= 2:
            raise LiveInputError(f"in {text!r}: the latent must be a whole number and the coefficient a number")
        shape = "SAE:LATENT:COEFFICIENT" if require_coefficient else "SAE:LATENT or SAE:LATENT:COEFFICIENT"
        raise LiveInputError(f"a feature is {shape}, e.g. {EXAMPLE}, not {text!r}")

    def as_text(self) -> str:
        """The form ``parse`` reads back to this same target (the coefficient exactly, as briefly as that allows)."""
        if self.coefficient is None:
            return f"{self.sae}:{self.latent}"
        short = f"{self.coefficient:g}"
        return f"{self.sae}:{self.latent}:{short if float(short) == self.coefficient else repr(self.coefficient)}"

    def with_coefficient(self, coefficient: float) -> SteeringTarget:
        return replace(self, coefficient=coefficient)
