"""What every part of the store shares: the database, reads and retried writes, the audit log,
and query results as DataFrames."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from dashboard.userdata.database import Database
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.schema import TABLES
from dashboard.userdata.transactions import run_read, run_write

T = TypeVar("T")


class StoreBase:
    """The plumbing under :class:`~dashboard.userdata.store.UserStore`'s operations."""

    def __init__(self, database: Database, read_only: bool):
        self._db = database
        self.read_only = read_only

    @property
    def path(self) -> Path:
        return self._db.path

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection, for SQL that joins atlases with user data.

        ``ATTACH 'atlas.duckdb' AS atlas (READ_ONLY)`` here makes atlas tables joinable with
        :meth:`table` names. Attached files are shared by the whole instance, so attach once and
        run queries from threads through ``connection.cursor()``, never the connection itself.
        """
        return self._db.connection

    @property
    def retries(self) -> int:
        """How many write attempts lost a concurrency race and were retried (since opening)."""
        return self._db.retries

    def table(self, name: str) -> str:
        """A user-data table's fully qualified SQL name (e.g. for joins with attached atlases)."""
        if name not in TABLES:
            raise UserDataError(f"no user-data table {name!r}")
        return self._db.table(name)

    def _read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return run_read(self._db, work)

    def _write(self, what: str, work: Callable[[duckdb.DuckDBPyConnection, datetime], T]) -> T:
        """Run ``work`` in one transaction, retried whole when it loses a concurrency race. Callers
        are :func:`~dashboard.userdata.transactions.writes` methods, so the store is writable."""
        return run_write(self._db, what, work)

    def _audit(
        self,
        cursor: duckdb.DuckDBPyConnection,
        now: datetime,
        reviewer: str,
        action: str,
        edit_id: str,
        changes: list[tuple[str | None, str | None, str | None]],
        *,
        sae_hash: str | None = None,
        sae_name: str | None = None,
        latent: int | None = None,
        list_name: str | None = None,
        undoes: str | None = None,
    ) -> None:
        """Append one audit row per ``(field, old_value, new_value)`` in ``changes``, in one statement."""
        sequence = self._db.table("audit_id_seq")
        params: list = []
        for field, old_value, new_value in changes:
            params += [
                sequence,
                now,
                reviewer,
                action,
                sae_hash,
                sae_name,
                latent,
                list_name,
                field,
                old_value,
                new_value,
                edit_id,
                undoes,
            ]
        rows = ", ".join(["(nextval(?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(changes))
        cursor.execute(f"INSERT INTO {self._db.table('audit')} VALUES {rows}", params)

    def _frame(self, sql: str, params: list, times: Iterable[str] = ()) -> pd.DataFrame:
        """A query as a DataFrame. ``times`` columns arrive as epoch microseconds and become UTC
        timestamps: DuckDB's own TIMESTAMPTZ conversion needs pytz (absent here) for Python values and
        warns under pandas 3 for frames."""
        frame = self._read(lambda cursor: cursor.execute(sql, params).df())
        for column in frame.columns:
            if column in times:
                frame[column] = pd.to_datetime(frame[column], unit="us", utc=True)
            elif pd.api.types.is_string_dtype(frame[column]):  # missing text is None (not NaN), in every frame
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
        return frame

    def audit_frame(self) -> pd.DataFrame:
        """The whole audit log, oldest first: who changed what, when, from which value to which."""
        return self._frame(
            f"""SELECT id, epoch_us(changed_at) AS changed_at, reviewer, action, sae_hash, sae_name, latent,
                       list_name, field, old_value, new_value, edit_id, undoes
                FROM {self._db.table("audit")} ORDER BY id""",
            [],
            times=["changed_at"],
        )
