"""Feature annotations (status, label, tags, notes, confidence), their undo and history, and the
tag vocabulary.

Rows are never UPDATEd: a change is DELETE + INSERT of the row. DuckDB (2.0) detects
update-vs-update and delete-vs-delete conflicts but not an in-place UPDATE against a DELETE
(duckdb/duckdb#17223), and an UPDATE of a list column is itself a delete + insert, so mixing the
two can lose a committed change silently. Every write to a feature replaces its ``annotations`` row
(an edit, an undo, even an undo with nothing left to restore), so writes to one feature are
serialised and each audit row's ``old_value`` is the value the previous writer left.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import cast

import duckdb
import pandas as pd

from dashboard.userdata.base import StoreBase
from dashboard.userdata.errors import EditConflict, UserDataError
from dashboard.userdata.records import UNSET, Annotation, Unset
from dashboard.userdata.transactions import writes
from dashboard.userdata.validation import (
    CONFIDENCES,
    FIELDS,
    MAX_LABEL,
    MAX_NOTES,
    STATUSES,
    decode_field,
    encode_field,
    from_epoch_us,
    normalise_tag,
    valid_feature_key,
    valid_reviewer,
    valid_sae_name,
    valid_tags,
    valid_text,
)


class Annotations(StoreBase):
    """Annotations, their audit rows, undo, and the tag vocabulary."""

    def _annotation_in(self, cursor, sae_hash: str, latent: int) -> tuple[Annotation, bool]:
        row = cursor.execute(
            f"""SELECT sae_name, status, label, tags, notes, confidence, reviewer, epoch_us(updated_at)
                FROM {self._db.table("annotations")} WHERE sae_hash = ? AND latent = ?""",
            [sae_hash, latent],
        ).fetchone()
        if row is None:
            return Annotation(sae_hash, latent), False
        name, status, label, tags, notes, confidence, reviewer, updated = row
        return Annotation(
            sae_hash, latent, name, status, label, tuple(tags), notes, confidence, reviewer, from_epoch_us(updated)
        ), True

    def _save_annotation(self, cursor, annotation: Annotation, exists: bool) -> None:
        """Replace the feature's row (DELETE + INSERT, never UPDATE: see the module docstring)."""
        table = self._db.table("annotations")
        if exists:
            cursor.execute(
                f"DELETE FROM {table} WHERE sae_hash = ? AND latent = ?", [annotation.sae_hash, annotation.latent]
            )
        cursor.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                annotation.sae_hash,
                annotation.sae_name,
                annotation.latent,
                annotation.status,
                annotation.label,
                list(annotation.tags),
                annotation.notes,
                annotation.confidence,
                annotation.reviewer,
                annotation.updated_at,
            ],
        )

    def annotation(self, sae_hash: str, latent: int) -> Annotation:
        """A feature's triage state (the defaults, status 'unreviewed', when nobody has touched it)."""
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        return self._read(lambda cursor: self._annotation_in(cursor, sae_hash, latent)[0])

    @writes("save the annotation")
    def annotate(
        self,
        sae_hash: str,
        sae_name: str | None,
        latent: int,
        reviewer: str,
        *,
        status: str | Unset = UNSET,
        label: str | None | Unset = UNSET,
        tags: Iterable[str] | None | Unset = UNSET,
        notes: str | None | Unset = UNSET,
        confidence: str | None | Unset = UNSET,
        expected: datetime | None | Unset = UNSET,
    ) -> Annotation:
        """Change the given fields of a feature's annotation (others stay as they are).

        One transaction writes the row and one audit row per field whose value changes (an
        unchanged field is not logged; nothing changed writes nothing), all sharing one
        ``edit_id`` so :meth:`undo` can revert the save as a whole. Text is stored as given.

        ``expected`` is the ``updated_at`` the editor saw when the form opened (None: the feature was
        untouched). If the feature changed since, nothing is written and :class:`EditConflict` says
        who changed what, so a form never overwrites or drops anything without the user choosing.
        """
        what = "save the annotation"
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        sae_name = valid_sae_name(sae_name)
        reviewer = valid_reviewer(reviewer)
        wanted: dict[str, object] = {}
        if status is not UNSET:
            if status not in STATUSES:
                raise UserDataError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
            wanted["status"] = status
        if label is not UNSET:
            wanted["label"] = valid_text(label, "the label", MAX_LABEL)
        if tags is not UNSET:
            wanted["tags"] = valid_tags(tags)
        if notes is not UNSET:
            wanted["notes"] = valid_text(notes, "the notes", MAX_NOTES)
        if confidence is not UNSET:
            if confidence is not None and confidence not in CONFIDENCES:
                raise UserDataError(
                    f"unknown confidence {confidence!r}; choose one of {', '.join(CONFIDENCES)}, or none"
                )
            wanted["confidence"] = confidence

        def work(cursor, now: datetime) -> Annotation:
            wanted_tags = cast(tuple[str, ...], wanted.get("tags", ()))
            if wanted_tags:
                known = {
                    row[0] for row in cursor.execute(f"SELECT tag FROM {self._db.table('tag_vocabulary')}").fetchall()
                }
                unknown = [tag for tag in wanted_tags if tag not in known]
                if unknown:
                    raise UserDataError(
                        f"unknown tag(s) {', '.join(unknown)}; add them to the vocabulary first "
                        f"(known: {', '.join(sorted(known))})"
                    )
            current, exists = self._annotation_in(cursor, sae_hash, latent)
            if expected is not UNSET and current.updated_at != expected:
                raise self._conflict(cursor, current, expected)
            changed = {field: value for field, value in wanted.items() if getattr(current, field) != value}
            if not changed:
                return current
            updated = replace(
                current, sae_name=sae_name or current.sae_name, reviewer=reviewer, updated_at=now, **changed
            )
            self._save_annotation(cursor, updated, exists)
            self._audit(
                cursor,
                now,
                reviewer,
                "edit",
                uuid.uuid4().hex,
                [
                    (field, encode_field(field, getattr(current, field)), encode_field(field, changed[field]))
                    for field in FIELDS
                    if field in changed
                ],
                sae_hash=sae_hash,
                sae_name=updated.sae_name,
                latent=latent,
            )
            return updated

        return self._write(what, work)

    def _conflict(self, cursor: duckdb.DuckDBPyConnection, current: Annotation, since: datetime | None) -> EditConflict:
        """The edit conflict for a save whose form saw the feature as of ``since``."""
        rows = cursor.execute(
            f"""SELECT epoch_us(changed_at) AS changed_at, reviewer, action, field, old_value, new_value
                FROM {self._db.table("audit")}
                WHERE sae_hash = ? AND latent = ? AND action IN ('edit', 'undo') AND field IS NOT NULL
                  AND (?::TIMESTAMPTZ IS NULL OR changed_at > ?::TIMESTAMPTZ) ORDER BY id""",
            [current.sae_hash, current.latent, since, since],
        ).df()
        rows["changed_at"] = pd.to_datetime(rows["changed_at"], unit="us", utc=True)
        who = ", ".join(dict.fromkeys(rows["reviewer"])) or current.reviewer or "someone"
        fields = ", ".join(dict.fromkeys(rows["field"])) or "it"
        when = current.updated_at.strftime("%H:%M:%S UTC") if current.updated_at else "just now"
        return EditConflict(
            f"{who} changed this feature ({fields}) at {when}, after you opened it; nothing of yours was saved yet",
            current,
            rows,
        )

    @writes("undo the change")
    def undo(self, sae_hash: str, latent: int, reviewer: str) -> Annotation | None:
        """Revert ``reviewer``'s most recent save on this feature that is not undone yet.

        "Undo my last change": other reviewers' saves are never the target, and a field somebody
        changed since is left alone (their value wins). Repeated undos walk back through the
        reviewer's earlier saves; each save is undone at most once (an 'undo' audit row names it in
        ``undoes``). Returns the annotation afterwards, or None when there is nothing to undo.
        """
        what = "undo the change"
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        reviewer = valid_reviewer(reviewer)
        audit = self._db.table("audit")

        def work(cursor, now: datetime) -> Annotation | None:
            target = cursor.execute(
                f"""SELECT edit_id FROM {audit} AS a
                    WHERE action = 'edit' AND sae_hash = ? AND latent = ? AND reviewer = ?
                      AND NOT EXISTS (SELECT 1 FROM {audit} AS u WHERE u.action = 'undo' AND u.undoes = a.edit_id)
                    ORDER BY id DESC LIMIT 1""",
                [sae_hash, latent, reviewer],
            ).fetchone()
            if target is None:
                return None
            edit_id = target[0]
            rows = cursor.execute(
                f"SELECT field, old_value, new_value, sae_name FROM {audit} WHERE edit_id = ? ORDER BY id", [edit_id]
            ).fetchall()
            current, exists = self._annotation_in(cursor, sae_hash, latent)
            restore = {
                field: decode_field(field, old)
                for field, old, new, _ in rows
                if encode_field(field, getattr(current, field)) == new
            }
            sae_name = current.sae_name or rows[0][3]
            updated = replace(current, reviewer=reviewer, updated_at=now, **restore) if restore else current
            # Written even when nothing is restored, so a concurrent save or undo of this feature conflicts.
            self._save_annotation(cursor, updated, exists)
            changes: list[tuple[str | None, str | None, str | None]] = [
                (field, encode_field(field, getattr(current, field)), encode_field(field, restore[field]))
                for field in FIELDS
                if field in restore
            ]
            # Every field was changed again since: one row with no field records the save as undone all the same.
            self._audit(
                cursor,
                now,
                reviewer,
                "undo",
                uuid.uuid4().hex,
                changes or [(None, None, None)],
                sae_hash=sae_hash,
                sae_name=sae_name,
                latent=latent,
                undoes=edit_id,
            )
            return updated

        return self._write(what, work)

    def last_edit(self, reviewer: str, sae_hashes: Iterable[str]) -> tuple[str, int] | None:
        """(sae_hash, latent) of ``reviewer``'s most recent save on these SAEs that is not undone yet:
        the feature "Undo my last change" goes back to when the reviewer has moved on since."""
        reviewer = valid_reviewer(reviewer)
        audit = self._db.table("audit")
        row = self._read(
            lambda cursor: cursor.execute(
                f"""SELECT sae_hash, latent FROM {audit} AS a
                    WHERE action = 'edit' AND reviewer = ? AND list_contains(?::VARCHAR[], sae_hash)
                      AND NOT EXISTS (SELECT 1 FROM {audit} AS u WHERE u.action = 'undo' AND u.undoes = a.edit_id)
                    ORDER BY id DESC LIMIT 1""",
                [reviewer, list(dict.fromkeys(sae_hashes))],
            ).fetchone()
        )
        return None if row is None else (str(row[0]), int(row[1]))

    def history(self, sae_hash: str, latent: int) -> pd.DataFrame:
        """Every audit row about this feature (edits, undos, list changes), newest first."""
        sae_hash, latent = valid_feature_key(sae_hash, latent)
        return self._frame(
            f"""SELECT id, epoch_us(changed_at) AS changed_at, reviewer, action, field, old_value, new_value,
                       edit_id, undoes, list_name, sae_name
                FROM {self._db.table("audit")} WHERE sae_hash = ? AND latent = ? ORDER BY id DESC""",
            [sae_hash, latent],
            times=["changed_at"],
        )

    def reviewed_counts(self, sae_hashes: Iterable[str]) -> dict[str, int]:
        """Per SAE hash, how many features have a status other than 'unreviewed' (for progress bars)."""
        hashes = list(dict.fromkeys(sae_hashes))
        rows = self._read(
            lambda cursor: cursor.execute(
                f"""SELECT sae_hash, count(*) FROM {self._db.table("annotations")}
                WHERE status <> 'unreviewed' AND list_contains(?::VARCHAR[], sae_hash) GROUP BY sae_hash""",
                [hashes],
            ).fetchall()
        )
        counts = dict.fromkeys(hashes, 0)
        counts.update(dict(rows))
        return counts

    # -- tags ------------------------------------------------------------------------------

    def tags(self) -> list[str]:
        """The tag vocabulary, sorted: annotations may use only these."""
        return [
            row[0]
            for row in self._read(
                lambda cursor: cursor.execute(
                    f"SELECT tag FROM {self._db.table('tag_vocabulary')} ORDER BY tag"
                ).fetchall()
            )
        ]

    @writes("add the tag")
    def add_tag(self, tag: str, reviewer: str) -> str:
        """Add ``tag`` (normalised, see :func:`normalise_tag`) to the vocabulary; return its normal form.
        A tag already there is left as it is (and not logged)."""
        what = "add the tag"
        tag = normalise_tag(tag)
        reviewer = valid_reviewer(reviewer)
        vocabulary = self._db.table("tag_vocabulary")

        def work(cursor, now: datetime) -> str:
            if cursor.execute(f"SELECT 1 FROM {vocabulary} WHERE tag = ?", [tag]).fetchone() is None:
                cursor.execute(f"INSERT INTO {vocabulary} VALUES (?, ?, ?)", [tag, reviewer, now])
                self._audit(cursor, now, reviewer, "tag_added", uuid.uuid4().hex, [("tag", None, tag)])
            return tag

        return self._write(what, work)

    def annotations_frame(self, sae_hashes: Iterable[str] | None = None) -> pd.DataFrame:
        """Every annotation (of the given SAEs, if any are named), for CSV/JSON download."""
        where, params = "", []
        if sae_hashes is not None:
            where, params = "WHERE list_contains(?::VARCHAR[], sae_hash)", [list(sae_hashes)]
        return self._frame(
            f"""SELECT sae_hash, sae_name, latent, status, label, tags, notes, confidence, reviewer,
                       epoch_us(updated_at) AS updated_at
                FROM {self._db.table("annotations")} {where} ORDER BY sae_name, sae_hash, latent""",
            params,
            times=["updated_at"],
        )
