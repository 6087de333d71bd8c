"""The user store: one object per user-data file and process, made of the operations' parts."""

from __future__ import annotations

import threading
from pathlib import Path

from dashboard.userdata.accounts import Accounts
from dashboard.userdata.annotations import Annotations
from dashboard.userdata.database import Database
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.experiments import Experiments
from dashboard.userdata.lists import Lists

_stores: dict[tuple[Path, bool], UserStore] = {}
_databases: dict[Path, Database] = {}
_stores_lock = threading.Lock()


class UserStore(Annotations, Lists, Experiments, Accounts):
    """Annotations, tags, lists, experiments, accounts and the audit log of one user-data file. Thread-safe: share it."""

    def close(self) -> None:
        """Close the file (releasing its lock) and forget it, so the next open reads it afresh."""
        with _stores_lock:
            for key in [key for key, store in _stores.items() if store._db is self._db]:
                del _stores[key]
            if _databases.get(self._db.path) is self._db:
                del _databases[self._db.path]
            self._db.close()


def open_user_store(path: str | Path, read_only: bool = False) -> UserStore:
    """The process's store for ``path``, opened (and created, with its schema) on first use.

    One per resolved path and process, because DuckDB allows one read-write instance of a file.
    ``read_only=True`` refuses every write at the API. If this process already has the file open
    read-write, the read-only store shares that instance; otherwise the file is opened read-only
    in DuckDB (so several read-only servers can share it), and a file that does not exist yet
    reads as empty (an in-memory database) rather than being created.
    """
    resolved = Path(path).expanduser().resolve()
    with _stores_lock:
        store = _stores.get((resolved, read_only))
        if store is not None:
            return store
        database = _databases.get(resolved)
        if database is None:
            database = Database.open(resolved, read_only)
            _databases[resolved] = database
        elif database.read_only_instance and not read_only:
            raise UserDataError(
                f"{resolved} is already open read-only in this process; "
                "a SAEscope server uses its user-data file either read-only or read-write, not both"
            )
        store = UserStore(database, read_only)
        _stores[(resolved, read_only)] = store
        return store
