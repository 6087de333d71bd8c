"""One row of a DuckDB query, asserted to exist (DuckDB's ``fetchone`` returns None for no row)."""

from __future__ import annotations

from typing import Any

import duckdb


def one_row(connection: duckdb.DuckDBPyConnection, query: str, params: list | tuple = ()) -> tuple[Any, ...]:
    """The first row ``query`` returns; fails the test, naming the query, when there is none."""
    row = connection.execute(query, params).fetchone()
    assert row is not None, f"no row for {query!r} with {params!r}"
    return row
