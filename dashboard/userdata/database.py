"""One DuckDB instance per user-data file and process, shared by every store and thread.

Why one: a Streamlit server is one process, and DuckDB refuses a second read-write instance of a
file (in this process or another). Sessions are threads; each operation takes its own
``connection.cursor()`` (see :mod:`dashboard.userdata.transactions`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb

from dashboard.userdata import schema
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.transactions import one_line


def open_error(path: Path, error: duckdb.Error) -> UserDataError:
    """A one-line explanation of why DuckDB could not open (or read the schema of) ``path``."""
    message = one_line(error)
    if "Could not set lock" in message:
        pid = re.search(r"PID (\d+)", message)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return UserDataError(
            f"{path} is locked by another process{holder}: another SAEscope server holds this user-data file; "
            "stop it, or give this server its own file"
        )
    if "not a valid DuckDB database" in message:
        return UserDataError(f"{path} is not a DuckDB file (corrupt, or not a SAEscope user-data file)")
    if "Corrupt database file" in message or "Could not read enough bytes" in message:
        return UserDataError(f"{path} is damaged (corrupt or truncated); restore it from a backup ({message})")
    return UserDataError(f"cannot open the user-data file {path}: {message}")


class Database:
    """One DuckDB instance for one user-data file: its connection, catalog, tables and retry count."""

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection, read_only_instance: bool):
        self.path = path
        self.connection = connection
        self.read_only_instance = read_only_instance
        (self.catalog,) = connection.execute("SELECT current_database()").fetchone() or ("",)
        self.lock = threading.Lock()
        self.retries = 0
        self.closed = False
        self.tables: set[str] = set()

    @classmethod
    def open(cls, path: Path, read_only: bool) -> Database:
        """Open (creating or migrating when read-write) the file; a missing file opened read-only
        reads as empty (an in-memory database) rather than being created."""
        if path.is_dir():
            raise UserDataError(f"{path} is a folder; the user-data store needs a file path")
        in_memory = read_only and not path.exists()
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserDataError(f"cannot create the folder for the user-data file {path}: {error}") from None
        try:
            connection = duckdb.connect(":memory:" if in_memory else str(path), read_only=read_only and not in_memory)
        except duckdb.Error as error:
            raise open_error(path, error) from None
        database = cls(path, connection, read_only_instance=read_only and not in_memory)
        try:
            database.tables = schema.prepare(
                connection, database.catalog, database.table, path, create=not database.read_only_instance
            )
        except UserDataError:
            connection.close()
            raise
        except duckdb.Error as error:
            connection.close()
            raise open_error(path, error) from None
        return database

    def table(self, name: str) -> str:
        """``name`` qualified with this file's catalog, so SQL still finds it after other files are
        attached (or `USE` moves the connection's default catalog elsewhere)."""
        return '"' + self.catalog.replace('"', '""') + '".main.' + name

    def has(self, table: str) -> bool:
        """Whether the file has ``table`` (an older file opened read-only lacks the later ones)."""
        return table in self.tables

    def cursor(self) -> duckdb.DuckDBPyConnection:
        with self.lock:
            if self.closed:
                raise UserDataError(f"the user-data store {self.path} has been closed")
            return self.connection.cursor()

    def count_retry(self) -> None:
        with self.lock:
            self.retries += 1

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.connection.close()
