"""One row of a DuckDB query, asserted to exist (DuckDB's ``fetchone`` returns None for no row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def one_row(connection: duckdb.DuckDBPyConnection, query: str, params: list | tuple = ()) -> tuple[Any, ...]:
    """The first row ``query`` returns; fails the test, naming the query, when there is none."""
    row = connection.execute(query, params).fetchone()
    assert row is not None, f"no row for {query!r} with {params!r}"
    return row


def atlas_rows(path: Path, sql: str, *params) -> list[tuple]:
    """Every row of ``sql`` on the atlas file at ``path``, opened read-only."""
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql, list(params)).fetchall()
