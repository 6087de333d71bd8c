"""Who is acting and what they may do: roles, per-atlas access, and the user store's writes done as
the signed-in user (the name in the audit log is always theirs, never typed in a form).

Roles, each with everything the one before has: viewer (browse), reviewer (label, tag, lists,
run and save experiments, delete their own), admin (delete anyone's experiments, see every atlas;
accounts and grants are managed with ``saescope users``). Streamlit-free, so tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from dashboard.userdata import Annotation, FeatureList, ListItem, UserDataError, UserStore

ROLE_RANK = {"viewer": 0, "reviewer": 1, "admin": 2}


class AccessDenied(UserDataError):
    """A write the signed-in user's role does not allow (already in the audit log when raised)."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    source: str  # "local" (the single default user), "account", "proxy" or "oidc"

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.role})"


def may_open(identity: Identity, atlas_key: str, grants: Mapping[str, set[str]]) -> bool:
    """Whether ``identity`` may see the atlas: admins see all; an atlas with no grants is open to all;
    otherwise the user's name or role must be among its grantees."""
    allowed = grants.get(atlas_key)
    return (
        identity.at_least("admin")
        or not allowed
        or f"user:{identity.name}" in allowed
        or f"role:{identity.role}" in allowed
    )


class ActingStore:
    """The user store's writes, done as ``identity``: a role that may not write is refused with a
    clear message, and the refusal is audited. Reads go to the store itself."""

    def __init__(self, store: UserStore, identity: Identity):
        self.store = store
        self.identity = identity

    def _require(self, role: str, what: str) -> str:
        if self.identity.at_least(role):
            return self.identity.name
        message = (
            f"{self.identity.name} is signed in as {self.identity.role}: a {self.identity.role} cannot {what} "
            f"(that needs the {role} role; ask an admin)"
        )
        try:
            self.store.record_refusal(self.identity.name, "write_refused", what, f"role {self.identity.role}")
        except UserDataError:
            pass  # a read-only store can log nothing; the user still sees why
        raise AccessDenied(message)

    def annotate(
        self, sae_hash: str, sae_name: str | None, latent: int, *, expected: datetime | None, **fields
    ) -> Annotation:
        who = self._require("reviewer", "label features")
        return self.store.annotate(sae_hash, sae_name, latent, who, expected=expected, **fields)

    def undo(self, sae_hash: str, latent: int) -> Annotation | None:
        """Undo the signed-in user's own last save on this feature (never anyone else's)."""
        return self.store.undo(sae_hash, latent, self._require("reviewer", "undo changes"))

    def undo_last(self, sae_hashes: Iterable[str]) -> tuple[str, int, Annotation | None] | None:
        """Undo the signed-in user's last save on any feature of these SAEs (the one they may have
        moved on from); returns that feature and its annotation afterwards, None when nothing is left."""
        who = self._require("reviewer", "undo changes")
        target = self.store.last_edit(who, sae_hashes)
        return None if target is None else (*target, self.store.undo(*target, who))

    def add_tag(self, tag: str) -> str:
        return self.store.add_tag(tag, self._require("reviewer", "add tags"))

    def create_list(self, name: str, description: str = "") -> FeatureList:
        return self.store.create_list(name, self._require("reviewer", "create lists"), description)

    def add_to_list(self, name: str, sae_hash: str, sae_name: str | None, latent: int, note: str = "") -> ListItem:
        return self.store.add_to_list(name, sae_hash, sae_name, latent, self._require("reviewer", "change lists"), note)

    def remove_from_list(self, name: str, sae_hash: str, latent: int) -> bool:
        return self.store.remove_from_list(name, sae_hash, latent, self._require("reviewer", "change lists"))

    def record_experiment(self, kind: str, title: str, model_hash: str, record: dict) -> str:
        return self.store.record_experiment(
            kind, self._require("reviewer", f"save {kind} experiments"), title, model_hash, record
        )

    def delete_experiment(self, experiment_id: str) -> bool:
        """Reviewers delete their own experiments; admins anyone's."""
        who = self._require("reviewer", "delete experiments")
        owner = self.store.experiment(experiment_id)["reviewer"]
        if owner != who:
            self._require("admin", f"delete {owner}'s experiment")
        return self.store.delete_experiment(experiment_id, who)


def visible_atlases(identity: Identity, keys: Iterable[str], grants: Mapping[str, set[str]]) -> list[str]:
    return [key for key in keys if may_open(identity, key, grants)]
