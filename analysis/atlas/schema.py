"""The atlas file's schema version and the one way to open an atlas for reading.

Torch-free on purpose: the dashboard's browse pages import this and nothing heavier.
``docs/SCHEMA.md`` documents every table; bump ``SCHEMA_VERSION`` with any change to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from analysis.errors import SAEscopeError

SCHEMA_VERSION = 3
TABLES = ("meta", "saes", "features", "examples", "windows", "documents", "tokens", "neighbours", "label_terms")


class AtlasError(SAEscopeError, ValueError):
    """An atlas file that cannot be read: missing, corrupt, unfinished, or of another schema version."""


def open_atlas(path: str | Path) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-only after checking it is a finished atlas of the schema this code knows."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(f"no atlas at {path}")
    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        raise AtlasError(f"{path} is not a readable DuckDB file (corrupt or not an atlas): {error}") from None
    try:
        tables = {row[0] for row in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "meta" not in tables:
            raise AtlasError(f"{path} is a DuckDB file but not a SAEscope atlas (no meta table)")
        row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = json.loads(row[0]) if row else None
        if version != SCHEMA_VERSION:
            raise AtlasError(
                f"{path} has atlas schema version {version}; this SAEscope reads version {SCHEMA_VERSION}. "
                "Rebuild it with `python -m analysis precompute`."
            )
        missing = set(TABLES) - tables
        if missing:
            raise AtlasError(f"{path} is missing tables {sorted(missing)}: it is unfinished or damaged")
    except AtlasError:
        connection.close()
        raise
    return connection


def read_meta(connection: duckdb.DuckDBPyConnection) -> dict:
    return {key: json.loads(value) for key, value in connection.execute("SELECT key, value FROM meta").fetchall()}
