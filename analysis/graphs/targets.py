"""What a graph explains: the model's likely next tokens, one chosen token, or the difference of
two tokens' logits, turned into the ``attribution_targets`` circuit-tracer's ``attribute`` takes.

Token strings are resolved here rather than by circuit-tracer so that an unknown or multi-token
string is refused with a message naming it, before any attribution work starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from circuit_tracer.attribution.targets import CustomTarget

from analysis.live_model import LiveInputError


@dataclass(frozen=True)
class GraphTarget:
    """``GraphTarget()``: the top tokens up to 95% probability (at most 10);
    ``GraphTarget(token=" the")``: that token's logit;
    ``GraphTarget(token=" the", versus=" a")``: logit(" the") - logit(" a")."""

    token: str | None = None
    versus: str | None = None

    def __post_init__(self) -> None:
        if self.versus is not None and self.token is None:
            raise LiveInputError("a logit difference needs both tokens: give token as well as versus")


def token_id(tokenizer, text: str) -> int:
    """The one vocabulary id whose text is ``text``; LiveInputError if there is none."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.decode(ids) != text:
        raise LiveInputError(
            f"target {text!r} is not one token of this model's vocabulary "
            f"(it encodes to {len(ids)} tokens: {[tokenizer.decode([i]) for i in ids]})"
        )
    return ids[0]


def attribution_targets(
    target: GraphTarget, tokenizer, unembed: torch.Tensor
) -> torch.Tensor | list[CustomTarget] | None:
    """circuit-tracer's ``attribution_targets`` for ``target`` (``unembed`` is W_U, d_model x vocab).

    A logit difference is one custom target along W_U[:, a] - W_U[:, b]; its weight is 1 because it
    is the only target, and pruning keeps fractions of influence, which do not depend on the weight.
    """
    if target.token is None:
        return None
    first = token_id(tokenizer, target.token)
    if target.versus is None:
        return torch.tensor([first])
    second = token_id(tokenizer, target.versus)
    if second == first:
        raise LiveInputError(f"a logit difference needs two different tokens, not {target.token!r} twice")
    direction = (unembed[:, first] - unembed[:, second]).detach()
    return [CustomTarget(token_str=f"{target.token} - {target.versus}", prob=1.0, vec=direction)]
