"""Where a default and a steered completion first differ, and how that place is named to a person.

One definition for every surface (the CLI's ``steer``, the Steer page while it streams, its result
and its history): tokens are stored 0-based (``SteeringResult.divergence``, the record's
``divergence.index``) and always shown 1-based, as "generated token N" counting the first generated
token as 1, so the CLI and the dashboard name the same token with the same number. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_difference(default: Sequence[int], steered: Sequence[int]) -> int | None:
    """The 0-based index of the first generated token that differs (None while they agree)."""
    return next((i for i, (a, b) in enumerate(zip(default, steered)) if a != b), None)


def token_number(index: int) -> int:
    """The 1-based number a person reads for the 0-based generated-token ``index``."""
    return index + 1


def generated_token(index: int) -> str:
    """``generated token N``: the words both surfaces use for the 0-based ``index``."""
    return f"generated token {token_number(index)}"
