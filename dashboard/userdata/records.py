"""What the store hands back: a feature's annotation, a list, a list item (immutable values)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime


class Unset(enum.Enum):
    UNSET = "unset"


UNSET = Unset.UNSET  # "not given": `annotate` leaves such fields as they are


@dataclass(frozen=True)
class Annotation:
    """One feature's triage state; a feature nobody has touched reads as the defaults."""

    sae_hash: str
    latent: int
    sae_name: str | None = None
    status: str = "unreviewed"
    label: str = ""
    tags: tuple[str, ...] = ()
    notes: str = ""
    confidence: str | None = None
    reviewer: str | None = None  # who changed it last
    updated_at: datetime | None = None

    @property
    def reviewed(self) -> bool:
        return self.status != "unreviewed"


@dataclass(frozen=True)
class FeatureList:
    name: str
    description: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class ListItem:
    name: str
    sae_hash: str
    sae_name: str | None
    latent: int
    note: str
    added_by: str
    added_at: datetime
