"""Checks and normal forms for everything a user hands the store, and the text form of audited values.

Each check returns the value to store or raises :class:`UserDataError` with a message for the user.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import SupportsIndex, cast, overload

from dashboard.userdata.errors import UserDataError

STATUSES = ("unreviewed", "interpretable", "polysemantic", "uninterpretable", "dead")
CONFIDENCES = ("low", "medium", "high")
SEED_TAGS = ("pii", "bias", "deception", "refusal", "toxicity", "spurious-correlation")
SEED_AUTHOR = "saescope"
FIELDS = ("status", "label", "tags", "notes", "confidence")  # what `annotate` edits, in audit order
EXPERIMENT_KINDS = ("steering", "graph")
ANONYMOUS = "anonymous"  # who an experiment is recorded under when no reviewer name was given

ROLES = ("viewer", "reviewer", "admin")  # each can do what the one before can, and more

MAX_LABEL = 500
MAX_NOTES = 5000
MAX_REVIEWER = 100
MAX_TAG = 40
MAX_LIST_NAME = 100
MAX_SAE_NAME = 300
MAX_DESCRIPTION = 2000

_TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def short_name(value: object, what: str, limit: int, missing: str) -> str:
    """A stripped, non-empty one-line name (a reviewer's, a list's) of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise UserDataError(missing)
    value = value.strip()
    if len(value) > limit or _CONTROL.search(value):
        raise UserDataError(f"{what}s are at most {limit} characters, without control characters")
    _encodable(value, f"the {what}")
    return value


def valid_reviewer(reviewer: object) -> str:
    return short_name(reviewer, "reviewer name", MAX_REVIEWER, "a reviewer name is required (who made this change?)")


def _encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserDataError(f"{what} is not valid Unicode text (it holds unpaired surrogates)") from None


def valid_text(value: object, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserDataError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise UserDataError(f"{what} is {len(value)} characters long; the limit is {limit}")
    _encodable(value, what)
    return value


def valid_feature_key(sae_hash: object, latent: object) -> tuple[str, int]:
    if not isinstance(sae_hash, str) or not sae_hash.strip():
        raise UserDataError("sae_hash must be the SAE's content hash (non-empty text)")
    try:
        index = operator.index(cast(SupportsIndex, latent))  # ints, and numpy's integers
    except TypeError:
        index = -1
    if isinstance(latent, bool) or index < 0:
        raise UserDataError(f"latent must be a non-negative integer, not {latent!r}")
    return sae_hash, index


def valid_sae_name(sae_name: object) -> str | None:
    if sae_name is None:
        return None
    return valid_text(sae_name, "the SAE name", MAX_SAE_NAME)


def normalise_tag(tag: object) -> str:
    """The canonical form of a tag: stripped, lower-case, spaces as '-' (so 'PII ' and 'pii' are one)."""
    if not isinstance(tag, str):
        raise UserDataError(f"tags are text, not {type(tag).__name__}")
    normal = re.sub(r"\s+", "-", tag.strip().lower())
    if not normal or len(normal) > MAX_TAG or not _TAG_PATTERN.fullmatch(normal):
        raise UserDataError(
            f"{tag!r} is not a valid tag: use 1 to {MAX_TAG} characters from a-z, 0-9, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return normal


def valid_tags(tags: object) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise UserDataError("tags must be a list of tag names, e.g. ['pii'], not a single string")
    return tuple(sorted({normalise_tag(tag) for tag in tags}))


def valid_list_name(name: object) -> str:
    return short_name(name, "list name", MAX_LIST_NAME, "a list needs a name")


def encode_field(field: str, value: object) -> str | None:
    """A field's value as audit text (tags as a JSON list)."""
    if field == "tags":
        return json.dumps(list(cast(Iterable[str], value)), ensure_ascii=False)
    return value  # type: ignore[return-value]  # str, or None for an unset confidence


def decode_field(field: str, text: str | None) -> object:
    if field == "tags":
        return tuple(json.loads(text)) if text else ()
    if field in ("label", "notes"):
        return text or ""
    if field == "status":
        return text or "unreviewed"
    return text


@overload
def from_epoch_us(epoch_us: int) -> datetime: ...
@overload
def from_epoch_us(epoch_us: None) -> None: ...
def from_epoch_us(epoch_us: int | None) -> datetime | None:
    """A time DuckDB handed over as ``epoch_us(...)`` (microseconds, exact) as an aware UTC datetime."""
    return None if epoch_us is None else _EPOCH + timedelta(microseconds=epoch_us)


def valid_account_name(name: object) -> str:
    """A sign-in name: 1 to 100 of ASCII letters, digits, '.', '_', '@', '+', '-' (an e-mail address
    fits), so no two names look alike and none hides characters (no bidi controls, no zero-width)."""
    if not isinstance(name, str) or not _ACCOUNT_NAME.fullmatch(name.strip()):
        raise UserDataError(
            f"{name!r} is not a valid user name: use 1 to 100 ASCII letters, digits, '.', '_', '@', '+' or '-', "
            "starting with a letter or digit"
        )
    return name.strip()


def valid_role(role: object) -> str:
    if role not in ROLES:
        raise UserDataError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    return str(role)


def valid_principal(principal: object) -> str:
    """Who an atlas is opened to: a user name, or ``role:<role>``; returned as 'user:<name>' or 'role:<role>'."""
    if isinstance(principal, str) and principal.startswith("role:"):
        return "role:" + valid_role(principal.removeprefix("role:"))
    return "user:" + valid_account_name(principal.removeprefix("user:") if isinstance(principal, str) else principal)
