"""A tokenizer's special-token ids as plain ints.

transformers types ``bos_token_id`` and friends as ``str | list[str] | int | None``; the code that
builds windows needs an int and should say clearly when a tokenizer has no such token.
"""

from __future__ import annotations

from typing import Any, Literal


def special_token_id(tokenizer: Any, which: Literal["bos", "eos", "pad"]) -> int:
    value = getattr(tokenizer, f"{which}_token_id", None)
    if not isinstance(value, int):
        raise ValueError(f"the tokenizer has no {which.upper()} token id (found {value!r})")
    return value
