"""Experiments (steering runs, saved graphs): appended whole as JSON, never edited; a delete is audited."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import pandas as pd

from dashboard.userdata.base import StoreBase
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.transactions import writes
from dashboard.userdata.validation import (
    ANONYMOUS,
    EXPERIMENT_KINDS,
    MAX_LABEL,
    from_epoch_us,
    valid_reviewer,
    valid_text,
)


class Experiments(StoreBase):
    """Steering runs and graphs, with who made them."""

    @writes("record the experiment")
    def record_experiment(self, kind: str, reviewer: str, title: str, model_hash: str, record: dict) -> str:
        """Append one experiment with its whole JSON record; returns its id. Never changed afterwards."""
        if kind not in EXPERIMENT_KINDS:
            raise UserDataError(f"unknown experiment kind {kind!r}; known: {', '.join(EXPERIMENT_KINDS)}")
        reviewer = valid_reviewer(reviewer or ANONYMOUS)
        title = valid_text(title, "the title", MAX_LABEL)
        try:
            payload = json.dumps(record, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise UserDataError(f"the {kind} record cannot be stored as JSON: {error}") from None
        experiment_id = uuid.uuid4().hex

        def work(cursor, now: datetime) -> str:
            cursor.execute(
                f"INSERT INTO {self._db.table('experiments')} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [experiment_id, kind, now, reviewer, title, str(model_hash), payload],
            )
            return experiment_id

        return self._write(f"record the {kind}", work)

    @writes("delete the experiment")
    def delete_experiment(self, experiment_id: str, reviewer: str) -> bool:
        """Delete one experiment (a saved graph the reader no longer wants); the audit log keeps who
        deleted which one, with its kind and title. False if there was no such experiment."""
        what = "delete the experiment"
        reviewer = valid_reviewer(reviewer or ANONYMOUS)
        experiments = self._db.table("experiments")

        def work(cursor, now: datetime) -> bool:
            if not self._db.has("experiments"):
                return False
            row = cursor.execute(f"SELECT kind, title FROM {experiments} WHERE id = ?", [str(experiment_id)]).fetchone()
            if row is None:
                return False
            cursor.execute(f"DELETE FROM {experiments} WHERE id = ?", [str(experiment_id)])
            old = json.dumps({"id": str(experiment_id), "kind": row[0], "title": row[1]}, ensure_ascii=False)
            self._audit(cursor, now, reviewer, "experiment_delete", uuid.uuid4().hex, [("experiment", old, None)])
            return True

        return self._write(what, work)

    def experiments(self, kind: str, limit: int = 200) -> pd.DataFrame:
        """The newest experiments of a kind (without their records): id, created_at, reviewer, title."""
        if not self._db.has("experiments"):
            return pd.DataFrame(columns=["id", "created_at", "reviewer", "title", "model_hash"])
        return self._frame(
            f"""SELECT id, epoch_us(created_at) AS created_at, reviewer, title, model_hash
                FROM {self._db.table("experiments")} WHERE kind = ? ORDER BY created_at DESC, id LIMIT ?""",
            [kind, int(limit)],
            times=["created_at"],
        )

    def experiment(self, experiment_id: str) -> dict:
        """One experiment's record with its id, kind, time and reviewer; UserDataError if unknown."""
        row = None
        if self._db.has("experiments"):
            row = self._read(
                lambda cursor: cursor.execute(
                    f"""SELECT kind, epoch_us(created_at), reviewer, title, record
                    FROM {self._db.table("experiments")} WHERE id = ?""",
                    [str(experiment_id)],
                ).fetchone()
            )
        if row is None:
            raise UserDataError(f"no experiment {experiment_id!r} in {self.path}")
        kind, created_us, reviewer, title, record = row
        return {
            "id": experiment_id,
            "kind": kind,
            "created_at": from_epoch_us(created_us).isoformat(),
            "reviewer": reviewer,
            "title": title,
            "record": json.loads(record),
        }
