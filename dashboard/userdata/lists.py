"""Named feature lists (a shared shortlist, e.g. deception candidates) and their items."""

from __future__ import annotations

import uuid
from datetime import datetime

import pandas as pd

from dashboard.userdata.base import StoreBase
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.records import FeatureList, ListItem
from dashboard.userdata.transactions import writes
from dashboard.userdata.validation import (
    MAX_DESCRIPTION,
    MAX_NOTES,
    from_epoch_us,
    valid_feature_key,
    valid_list_name,
    valid_reviewer,
    valid_sae_name,
    valid_text,
)


class Lists(StoreBase):
    """Named lists of features, each change audited."""

    @writes("create the list")
    def create_list(self, name: str, reviewer: str, description: str = "") -> FeatureList:
        """Create an empty named list of features (names are unique)."""
        what = "create the list"
        name = valid_list_name(name)
        reviewer = valid_reviewer(reviewer)
        description = valid_text(description, "the description", MAX_DESCRIPTION)
        lists = self._db.table("lists")

        def work(cursor, now: datetime) -> FeatureList:
            if cursor.execute(f"SELECT 1 FROM {lists} WHERE name = ?", [name]).fetchone() is not None:
                raise UserDataError(f"a list named {name!r} already exists")
            cursor.execute(f"INSERT INTO {lists} VALUES (?, ?, ?, ?)", [name, description, reviewer, now])
            self._audit(
                cursor,
                now,
                reviewer,
                "list_create",
                uuid.uuid4().hex,
                [("description", None, description)],
                list_name=name,
            )
            return FeatureList(name, description, reviewer, now)

        return self._write(what, work)

    def lists(self) -> pd.DataFrame:
        """Every list with its size, newest first."""
        return self._frame(
            f"""SELECT l.name, l.description, l.created_by, epoch_us(l.created_at) AS created_at,
                       count(i.latent) AS items
                FROM {self._db.table("lists")} AS l LEFT JOIN {self._db.table("list_items")} AS i ON i.name = l.name
                GROUP BY ALL ORDER BY created_at DESC, l.name""",
            [],
            times=["created_at"],
        )

    def _require_list(self, cursor, name: str) -> None:
        if cursor.execute(f"SELECT 1 FROM {self._db.table('lists')} WHERE name = ?", [name]).fetchone() is None:
            raise UserDataError(f"there is no list named {name!r}")

    @writes("add the feature to the list")
    def add_to_list(
        self, name: str, sae_hash: str, sae_name: str | None, latent: int, reviewer: str, note: str = ""
    ) -> ListItem:
        """Put a feature on a list, or change its note if it is there already."""
        what = "add the feature to the list"
        name = valid_list_name(name)
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        sae_name = valid_sae_name(sae_name)
        reviewer = valid_reviewer(reviewer)
        note = valid_text(note, "the note", MAX_NOTES)
        items = self._db.table("list_items")

        def work(cursor, now: datetime) -> ListItem:
            self._require_list(cursor, name)
            row = cursor.execute(
                f"""SELECT note, sae_name, added_by, epoch_us(added_at) FROM {items}
                    WHERE name = ? AND sae_hash = ? AND latent = ?""",
                [name, sae_hash, latent],
            ).fetchone()
            if row is None:
                cursor.execute(
                    f"INSERT INTO {items} VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [name, sae_hash, sae_name, latent, note, reviewer, now],
                )
                self._audit(
                    cursor,
                    now,
                    reviewer,
                    "list_add",
                    uuid.uuid4().hex,
                    [("note", None, note)],
                    sae_hash=sae_hash,
                    sae_name=sae_name,
                    latent=latent,
                    list_name=name,
                )
                return ListItem(name, sae_hash, sae_name, latent, note, reviewer, now)
            old_note, old_name, added_by, added_at = row
            if old_note == note:
                return ListItem(name, sae_hash, old_name, latent, note, added_by, from_epoch_us(added_at))
            # DELETE + INSERT rather than UPDATE, so a concurrent removal conflicts (module docstring).
            cursor.execute(
                f"DELETE FROM {items} WHERE name = ? AND sae_hash = ? AND latent = ?", [name, sae_hash, latent]
            )
            cursor.execute(
                f"INSERT INTO {items} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [name, sae_hash, old_name, latent, note, added_by, from_epoch_us(added_at)],
            )
            self._audit(
                cursor,
                now,
                reviewer,
                "list_note",
                uuid.uuid4().hex,
                [("note", old_note, note)],
                sae_hash=sae_hash,
                sae_name=sae_name,
                latent=latent,
                list_name=name,
            )
            return ListItem(name, sae_hash, old_name, latent, note, added_by, from_epoch_us(added_at))

        return self._write(what, work)

    @writes("remove the feature from the list")
    def remove_from_list(self, name: str, sae_hash: str, latent: int, reviewer: str) -> bool:
        """Take a feature off a list; False if it was not on it."""
        what = "remove the feature from the list"
        name = valid_list_name(name)
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        reviewer = valid_reviewer(reviewer)
        items = self._db.table("list_items")

        def work(cursor, now: datetime) -> bool:
            self._require_list(cursor, name)
            row = cursor.execute(
                f"SELECT note, sae_name FROM {items} WHERE name = ? AND sae_hash = ? AND latent = ?",
                [name, sae_hash, latent],
            ).fetchone()
            if row is None:
                return False
            cursor.execute(
                f"DELETE FROM {items} WHERE name = ? AND sae_hash = ? AND latent = ?", [name, sae_hash, latent]
            )
            self._audit(
                cursor,
                now,
                reviewer,
                "list_remove",
                uuid.uuid4().hex,
                [("note", row[0], None)],
                sae_hash=sae_hash,
                sae_name=row[1],
                latent=latent,
                list_name=name,
            )
            return True

        return self._write(what, work)

    def list_items(self, name: str) -> pd.DataFrame:
        """A list's features in the order they were added."""
        name = valid_list_name(name)
        self._read(lambda cursor: self._require_list(cursor, name))
        return self._frame(
            f"""SELECT name, sae_hash, sae_name, latent, note, added_by, epoch_us(added_at) AS added_at
                FROM {self._db.table("list_items")} WHERE name = ? ORDER BY added_at, sae_hash, latent""",
            [name],
            times=["added_at"],
        )

    def lists_with(self, sae_hash: str, latent: int) -> list[str]:
        """The names of the lists a feature is in, by name."""
        rows = self._read(
            lambda cursor: cursor.execute(
                f"SELECT name FROM {self._db.table('list_items')} WHERE sae_hash = ? AND latent = ? ORDER BY name",
                [sae_hash, int(latent)],
            ).fetchall()
        )
        return [name for (name,) in rows]

    def list_frame(self, name: str) -> pd.DataFrame:
        """A list's features with their annotations, for download (a list shared with others)."""
        name = valid_list_name(name)
        self._read(lambda cursor: self._require_list(cursor, name))
        return self._frame(
            f"""SELECT i.name AS list, i.sae_hash, coalesce(i.sae_name, a.sae_name) AS sae_name, i.latent, i.note,
                       i.added_by, epoch_us(i.added_at) AS added_at, coalesce(a.status, 'unreviewed') AS status,
                       coalesce(a.label, '') AS label, coalesce(a.tags, []::VARCHAR[]) AS tags,
                       a.confidence, a.notes, a.reviewer
                FROM {self._db.table("list_items")} AS i
                LEFT JOIN {self._db.table("annotations")} AS a ON a.sae_hash = i.sae_hash AND a.latent = i.latent
                WHERE i.name = ? ORDER BY i.added_at, i.sae_hash, i.latent""",
            [name],
            times=["added_at"],
        )
