"""How a completion is sampled (GenerationSettings), checked on construction. Torch-free, so the CLI
checks ``--max-new-tokens`` or ``--top-p`` before it imports torch, and the Steer page draws its
settings before the model is loaded; the sampling loop itself is analysis/sampling.py."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from analysis.live_errors import LiveInputError

MAX_NEW_TOKENS = 256
MAX_FREQUENCY_PENALTY = 2.0  # OpenAI's range is [-2, 2]


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LiveInputError(f"{name} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class GenerationSettings:
    """How to sample; every field is checked on construction and a bad one is a LiveInputError."""

    max_new_tokens: int = 64
    temperature: float = 0.5
    top_p: float = 1.0
    frequency_penalty: float = 1.0
    seed: int = 16
    use_kv_cache: bool = True

    def __post_init__(self) -> None:
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
            raise LiveInputError(f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, not {n!r}")
        if _number(self.temperature, "temperature") < 0:
            raise LiveInputError(f"temperature must be 0 (greedy) or more, not {self.temperature!r}")
        if not 0 < _number(self.top_p, "top_p") <= 1:
            raise LiveInputError(f"top_p must be above 0 and at most 1, not {self.top_p!r}")
        if abs(_number(self.frequency_penalty, "frequency_penalty")) > MAX_FREQUENCY_PENALTY:
            raise LiveInputError(
                f"frequency_penalty must be within ±{MAX_FREQUENCY_PENALTY}, not {self.frequency_penalty!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise LiveInputError(f"seed must be a whole number from 0 to 2**63 - 1, not {self.seed!r}")
        if not isinstance(self.use_kv_cache, bool):
            raise LiveInputError(f"use_kv_cache must be true or false, not {self.use_kv_cache!r}")

    def to_dict(self) -> dict:
        return asdict(self)
