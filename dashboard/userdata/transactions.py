"""Transactions on the user-data file: reads in a cursor of their own, writes in one transaction
retried whole when they lose an optimistic-concurrency race, and the read-only guard for writes.

DuckDB's concurrency is optimistic (first writer wins): a transaction that deletes a row another
transaction deleted after it began fails with ``TransactionException`` ("Conflict on tuple
deletion"), and one inserting a key another transaction inserted fails with a duplicate-key error
at the insert or at commit. Those are retried, whole, with a small random backoff.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

import duckdb

from dashboard.userdata.errors import ReadOnlyError, UserDataError

if TYPE_CHECKING:
    from dashboard.userdata.database import Database

MAX_ATTEMPTS = 50  # per write; with the backoff below a write gives up after a few seconds of conflicts
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.1

T = TypeVar("T")
P = ParamSpec("P")


class _Guarded(Protocol):
    read_only: bool


S = TypeVar("S", bound=_Guarded)


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    try:
        cursor.execute("ROLLBACK")
    except duckdb.Error:
        pass  # no transaction left to roll back (a failed COMMIT ends it)


def is_conflict(error: duckdb.Error) -> bool:
    """Whether ``error`` is DuckDB losing an optimistic-concurrency race (so retrying can succeed)."""
    message = str(error)
    if isinstance(error, duckdb.TransactionException):
        return "Conflict" in message or "constraint violation" in message
    if isinstance(error, duckdb.ConstraintException):
        # A key another transaction inserted (committed after ours began, or not yet committed).
        # Every insert here is preceded by a check, inside the transaction, that the key is new.
        return "Duplicate key" in message
    return False


@contextmanager
def schema_transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor in one transaction: committed when the block ends, rolled back if it raises."""
    cursor = connection.cursor()
    try:
        cursor.execute("BEGIN TRANSACTION")
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        rollback(cursor)
        raise
    finally:
        cursor.close()


def run_read(database: Database, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``work`` on a cursor of its own; DuckDB errors become one-line UserDataErrors."""
    cursor = database.cursor()
    try:
        return work(cursor)
    except duckdb.Error as error:
        raise UserDataError(f"could not read the user-data file {database.path}: {one_line(error)}") from None
    finally:
        cursor.close()


def run_write(database: Database, what: str, work: Callable[[duckdb.DuckDBPyConnection, datetime], T]) -> T:
    """Run ``work`` in one transaction, retrying it whole when it loses a concurrency race."""
    last: duckdb.Error | None = None
    for attempt in range(MAX_ATTEMPTS):
        if attempt:
            database.count_retry()
            time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
        cursor = database.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            result = work(cursor, datetime.now(UTC))
            cursor.execute("COMMIT")
            return result
        except duckdb.Error as error:
            rollback(cursor)
            if not is_conflict(error):
                raise UserDataError(f"could not {what} in {database.path}: {one_line(error)}") from None
            last = error
        except BaseException:
            rollback(cursor)
            raise
        finally:
            cursor.close()
    raise UserDataError(
        f"could not {what}: other sessions kept changing the same data at the same moment "
        f"({MAX_ATTEMPTS} attempts, last: {one_line(last) if last else 'none'}); try again"
    )


def writes(what: str) -> Callable[[Callable[Concatenate[S, P], T]], Callable[Concatenate[S, P], T]]:
    """Mark a store method as a write: on a read-only store it raises :class:`ReadOnlyError`
    before looking at its arguments (one guard instead of one per method)."""

    def decorate(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
        @functools.wraps(method)
        def guarded(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
            if self.read_only:
                raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
            return method(self, *args, **kwargs)

        return guarded

    return decorate
