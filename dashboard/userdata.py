"""Everything users create in SAEscope: triage annotations, the tag vocabulary, named feature lists
and an append-only audit log, in one DuckDB file of their own.

Why a separate file: atlases are precomputed, read-only and rebuilt at will; what reviewers write
must survive that. Features are keyed by ``(sae_hash, latent)`` where ``sae_hash`` is the SAE's
weight content hash the atlas records (``saes.content_hash``), so a label follows its SAE into any
atlas built from it; ``sae_name`` is kept alongside for display and export only.

Concurrency: one Streamlit server is one process with one DuckDB instance for this file (DuckDB
refuses a second read-write instance of a file, in this process or another), so
:func:`open_user_store` caches one store per path. Sessions are threads; each operation runs in
its own ``connection.cursor()`` and one transaction. DuckDB's concurrency is optimistic (first
writer wins): a transaction that deletes a row another transaction deleted after it began fails
with ``TransactionException`` ("Conflict on tuple deletion"), and one inserting a key another
transaction inserted fails with a duplicate-key error at the insert or at commit. Those are
retried, whole, with a small random backoff.

Rows are therefore never UPDATEd: a change is DELETE + INSERT of the row. DuckDB (2.0) detects
update-vs-update and delete-vs-delete conflicts but not an in-place UPDATE against a DELETE
(duckdb/duckdb#17223), and an UPDATE of a list column is itself a delete + insert, so mixing the
two can lose a committed change silently. Anything else writing these tables must follow the same
rule (better: write only through this module). Every write to a feature replaces its
``annotations`` row (an edit, an undo, even an undo with nothing left to restore), so writes to
one feature are serialised and each audit row's ``old_value`` is the value the previous writer left.

Torch-free on purpose (stdlib, duckdb, pandas): the dashboard's pages import it.
"""

from __future__ import annotations

import enum
import json
import operator
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb
import pandas as pd

from analysis.errors import SAEscopeError

SCHEMA_VERSION = 2  # 2 added the experiments table (steering runs, later graphs)

STATUSES = ("unreviewed", "interpretable", "polysemantic", "uninterpretable", "dead")
CONFIDENCES = ("low", "medium", "high")
SEED_TAGS = ("pii", "bias", "deception", "refusal", "toxicity", "spurious-correlation")
SEED_AUTHOR = "saescope"
FIELDS = ("status", "label", "tags", "notes", "confidence")  # what `annotate` edits, in audit order
EXPERIMENT_KINDS = ("steering", "graph")
ANONYMOUS = "anonymous"  # who an experiment is recorded under when no reviewer name was given

MAX_LABEL = 500
MAX_NOTES = 5000
MAX_REVIEWER = 100
MAX_TAG = 40
MAX_LIST_NAME = 100
MAX_SAE_NAME = 300
MAX_DESCRIPTION = 2000

MAX_ATTEMPTS = 50  # per write; with the backoff below a write gives up after a few seconds of conflicts
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.1

_TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class UserDataError(SAEscopeError, ValueError):
    """A user-data operation that cannot be done: bad input, an unreadable or foreign file, a lock."""


class ReadOnlyError(UserDataError):
    """A write attempted on a store opened read-only."""


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET  # "not given": `annotate` leaves such fields as they are


@dataclass(frozen=True)
class Annotation:
    """One feature's triage state; a feature nobody has touched reads as the defaults."""

    sae_hash: str
    latent: int
    sae_name: str | None = None
    status: str = "unreviewed"
    label: str = ""
    tags: tuple[str, ...] = ()
    notes: str = ""
    confidence: str | None = None
    reviewer: str | None = None  # who changed it last
    updated_at: datetime | None = None

    @property
    def reviewed(self) -> bool:
        return self.status != "unreviewed"


@dataclass(frozen=True)
class FeatureList:
    name: str
    description: str
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class ListItem:
    name: str
    sae_hash: str
    sae_name: str | None
    latent: int
    note: str
    added_by: str
    added_at: datetime


# ---------------------------------------------------------------------------------------------
# Opening


_stores: dict[tuple[Path, bool], UserStore] = {}
_databases: dict[Path, _Database] = {}
_stores_lock = threading.Lock()


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
            database = _Database.open(resolved, read_only)
            _databases[resolved] = database
        elif database.read_only_instance and not read_only:
            raise UserDataError(
                f"{resolved} is already open read-only in this process; "
                "a SAEscope server uses its user-data file either read-only or read-write, not both"
            )
        store = UserStore(database, read_only)
        _stores[(resolved, read_only)] = store
        return store


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _open_error(path: Path, error: duckdb.Error) -> UserDataError:
    """A one-line explanation of why DuckDB could not open (or read the schema of) ``path``."""
    message = _one_line(error)
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


class _Database:
    """One DuckDB instance for one user-data file, shared by every store and thread of the process."""

    def __init__(self, path: Path, connection: duckdb.DuckDBPyConnection, read_only_instance: bool):
        self.path = path
        self.connection = connection
        self.read_only_instance = read_only_instance
        self.catalog = connection.execute("SELECT current_database()").fetchone()[0]
        self.lock = threading.Lock()
        self.retries = 0
        self.closed = False
        self.has_experiments = False

    @classmethod
    def open(cls, path: Path, read_only: bool) -> _Database:
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
            raise _open_error(path, error) from None
        database = cls(path, connection, read_only_instance=read_only and not in_memory)
        try:
            database.prepare(create=not database.read_only_instance)
        except UserDataError:
            connection.close()
            raise
        except duckdb.Error as error:
            connection.close()
            raise _open_error(path, error) from None
        return database

    def table(self, name: str) -> str:
        """``name`` qualified with this file's catalog, so SQL still finds it after other files are
        attached (or `USE` moves the connection's default catalog elsewhere)."""
        return '"' + self.catalog.replace('"', '""') + '".main.' + name

    def prepare(self, create: bool) -> None:
        """Check the schema version; create the schema in a new (empty) file."""
        tables = {
            row[0]
            for row in self.connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?", [self.catalog]
            ).fetchall()
        }
        if not tables:
            if not create:
                raise UserDataError(
                    f"{self.path} holds no SAEscope user data yet; open it read-write once to create it"
                )
            self.create_schema()
            self.has_experiments = True
            return
        if "user_meta" not in tables:
            raise UserDataError(
                f"{self.path} is a DuckDB file but not a SAEscope user-data file (no user_meta table; is it an atlas?)"
            )
        row = self.connection.execute(
            f"SELECT value FROM {self.table('user_meta')} WHERE key = 'schema_version'"
        ).fetchone()
        try:
            version = int(row[0]) if row else None
        except ValueError:
            version = None
        if version is None:
            raise UserDataError(f"{self.path} has no readable schema version in user_meta; it is damaged")
        if version > SCHEMA_VERSION:
            raise UserDataError(
                f"{self.path} was written by a newer SAEscope (user-data schema version {version}; this SAEscope "
                f"reads up to version {SCHEMA_VERSION}); upgrade SAEscope or use another user-data file"
            )
        if version == 1 and create:
            self._migrate_from_1()
            tables.add("experiments")
        elif version not in (1, SCHEMA_VERSION):
            raise UserDataError(
                f"{self.path} has user-data schema version {version}, which this SAEscope cannot migrate"
            )
        self.has_experiments = "experiments" in tables  # a v1 file opened read-only has none
        missing = {"annotations", "audit", "tag_vocabulary", "lists", "list_items"} - tables
        if missing:
            raise UserDataError(f"{self.path} is missing tables {sorted(missing)}; it is damaged")

    def create_schema(self) -> None:
        t = self.table
        status_check = ", ".join(f"'{s}'" for s in STATUSES)
        confidence_check = ", ".join(f"'{c}'" for c in CONFIDENCES)
        now = datetime.now(UTC)
        with self._schema_transaction() as cursor:
            cursor.execute(f"CREATE TABLE {t('user_meta')} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            cursor.execute(f"""CREATE TABLE {t("annotations")} (
                sae_hash VARCHAR NOT NULL, sae_name VARCHAR, latent BIGINT NOT NULL,
                status VARCHAR NOT NULL DEFAULT 'unreviewed' CHECK (status IN ({status_check})),
                label VARCHAR NOT NULL DEFAULT '', tags VARCHAR[] NOT NULL DEFAULT [],
                notes VARCHAR NOT NULL DEFAULT '',
                confidence VARCHAR CHECK (confidence IS NULL OR confidence IN ({confidence_check})),
                reviewer VARCHAR NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (sae_hash, latent))""")
            cursor.execute(f"CREATE SEQUENCE {t('audit_id_seq')}")
            # No key or index: appends from concurrent transactions never conflict.
            cursor.execute(f"""CREATE TABLE {t("audit")} (
                id BIGINT NOT NULL, changed_at TIMESTAMPTZ NOT NULL, reviewer VARCHAR NOT NULL,
                action VARCHAR NOT NULL, sae_hash VARCHAR, sae_name VARCHAR, latent BIGINT,
                list_name VARCHAR, field VARCHAR, old_value VARCHAR, new_value VARCHAR,
                edit_id VARCHAR NOT NULL, undoes VARCHAR)""")
            cursor.execute(f"""CREATE TABLE {t("tag_vocabulary")} (
                tag VARCHAR PRIMARY KEY, added_by VARCHAR NOT NULL, added_at TIMESTAMPTZ NOT NULL)""")
            cursor.execute(f"""CREATE TABLE {t("lists")} (
                name VARCHAR PRIMARY KEY, description VARCHAR NOT NULL DEFAULT '',
                created_by VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL)""")
            cursor.execute(f"""CREATE TABLE {t("list_items")} (
                name VARCHAR NOT NULL, sae_hash VARCHAR NOT NULL, sae_name VARCHAR, latent BIGINT NOT NULL,
                note VARCHAR NOT NULL DEFAULT '', added_by VARCHAR NOT NULL, added_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (name, sae_hash, latent))""")
            self._create_experiments(cursor)
            cursor.executemany(
                f"INSERT INTO {t('user_meta')} VALUES (?, ?)",
                [("schema_version", str(SCHEMA_VERSION)), ("created_at", now.isoformat())],
            )
            cursor.executemany(
                f"INSERT INTO {t('tag_vocabulary')} VALUES (?, ?, ?)", [(tag, SEED_AUTHOR, now) for tag in SEED_TAGS]
            )

    @contextmanager
    def _schema_transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor in one transaction: committed when the block ends, rolled back if it raises."""
        cursor = self.connection.cursor()
        try:
            cursor.execute("BEGIN TRANSACTION")
            yield cursor
            cursor.execute("COMMIT")
        except BaseException:
            _rollback(cursor)
            raise
        finally:
            cursor.close()

    def _create_experiments(self, cursor: duckdb.DuckDBPyConnection) -> None:
        # Rows are never edited (a delete is kept in the audit log); ``record`` is the experiment's whole JSON.
        cursor.execute(f"""CREATE TABLE {self.table("experiments")} (
            id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            reviewer VARCHAR NOT NULL, title VARCHAR NOT NULL, model_hash VARCHAR NOT NULL,
            record VARCHAR NOT NULL)""")

    def _migrate_from_1(self) -> None:
        """Version 1 -> 2: add the experiments table; nothing else changes."""
        with self._schema_transaction() as cursor:
            self._create_experiments(cursor)
            cursor.execute(f"DELETE FROM {self.table('user_meta')} WHERE key = 'schema_version'")
            cursor.execute(f"INSERT INTO {self.table('user_meta')} VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])

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


def _rollback(cursor: duckdb.DuckDBPyConnection) -> None:
    try:
        cursor.execute("ROLLBACK")
    except duckdb.Error:
        pass  # no transaction left to roll back (a failed COMMIT ends it)


def _is_conflict(error: duckdb.Error) -> bool:
    """Whether ``error`` is DuckDB losing an optimistic-concurrency race (so retrying can succeed)."""
    message = str(error)
    if isinstance(error, duckdb.TransactionException):
        return "Conflict" in message or "constraint violation" in message
    if isinstance(error, duckdb.ConstraintException):
        # A key another transaction inserted (committed after ours began, or not yet committed).
        # Every insert here is preceded by a check, inside the transaction, that the key is new.
        return "Duplicate key" in message
    return False


# ---------------------------------------------------------------------------------------------
# Validation


def _short_name(value: object, what: str, limit: int, missing: str) -> str:
    """A stripped, non-empty one-line name (a reviewer's, a list's) of at most ``limit`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise UserDataError(missing)
    value = value.strip()
    if len(value) > limit or _CONTROL.search(value):
        raise UserDataError(f"{what}s are at most {limit} characters, without control characters")
    _encodable(value, f"the {what}")
    return value


def _reviewer(reviewer: object) -> str:
    return _short_name(reviewer, "reviewer name", MAX_REVIEWER, "a reviewer name is required (who made this change?)")


def _encodable(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserDataError(f"{what} is not valid Unicode text (it holds unpaired surrogates)") from None


def _text(value: object, what: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserDataError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise UserDataError(f"{what} is {len(value)} characters long; the limit is {limit}")
    _encodable(value, what)
    return value


def _feature_key(sae_hash: object, latent: object) -> tuple[str, int]:
    if not isinstance(sae_hash, str) or not sae_hash.strip():
        raise UserDataError("sae_hash must be the SAE's content hash (non-empty text)")
    try:
        index = operator.index(latent)  # ints, and numpy's integers
    except TypeError:
        index = -1
    if isinstance(latent, bool) or index < 0:
        raise UserDataError(f"latent must be a non-negative integer, not {latent!r}")
    return sae_hash, index


def _sae_name(sae_name: object) -> str | None:
    if sae_name is None:
        return None
    return _text(sae_name, "the SAE name", MAX_SAE_NAME)


def normalise_tag(tag: object) -> str:
    """The canonical form of a tag: stripped, lower-case, spaces as '-' (so 'PII ' and 'pii' are one)."""
    if not isinstance(tag, str):
        raise UserDataError(f"tags are text, not {type(tag).__name__}")
    normal = re.sub(r"\s+", "-", tag.strip().lower())
    if not normal or len(normal) > MAX_TAG or not _TAG_PATTERN.fullmatch(normal):
        raise UserDataError(
            f"{tag!r} is not a valid tag: use 1 to {MAX_TAG} characters from a-z, 0-9, '-', '_' and '.', "
            "starting with a letter or digit"
        )
    return normal


def _tags(tags: object) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise UserDataError("tags must be a list of tag names, e.g. ['pii'], not a single string")
    return tuple(sorted({normalise_tag(tag) for tag in tags}))


def _list_name(name: object) -> str:
    return _short_name(name, "list name", MAX_LIST_NAME, "a list needs a name")


def _encode(field: str, value: object) -> str | None:
    """A field's value as audit text (tags as a JSON list)."""
    if field == "tags":
        return json.dumps(list(value), ensure_ascii=False)
    return value  # type: ignore[return-value]  # str, or None for an unset confidence


def _decode(field: str, text: str | None) -> object:
    if field == "tags":
        return tuple(json.loads(text)) if text else ()
    if field in ("label", "notes"):
        return text or ""
    if field == "status":
        return text or "unreviewed"
    return text


def _time(epoch_us: int | None) -> datetime | None:
    return None if epoch_us is None else _EPOCH + timedelta(microseconds=epoch_us)


# ---------------------------------------------------------------------------------------------
# The store


class UserStore:
    """Annotations, tags, lists and the audit log of one user-data file. Thread-safe: share it."""

    def __init__(self, database: _Database, read_only: bool):
        self._db = database
        self.read_only = read_only

    # -- plumbing --------------------------------------------------------------------------

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
        if name not in ("annotations", "audit", "tag_vocabulary", "lists", "list_items", "user_meta", "experiments"):
            raise UserDataError(f"no user-data table {name!r}")
        return self._db.table(name)

    def close(self) -> None:
        """Close the file (releasing its lock) and forget it, so the next open reads it afresh."""
        with _stores_lock:
            for key in [key for key, store in _stores.items() if store._db is self._db]:
                del _stores[key]
            if _databases.get(self._db.path) is self._db:
                del _databases[self._db.path]
            self._db.close()

    def _read(self, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        cursor = self._db.cursor()
        try:
            return work(cursor)
        except duckdb.Error as error:
            raise UserDataError(f"could not read the user-data file {self.path}: {_one_line(error)}") from None
        finally:
            cursor.close()

    def _write(self, what: str, work: Callable[[duckdb.DuckDBPyConnection, datetime], T]) -> T:
        """Run ``work`` in one transaction, retrying it whole when it loses a concurrency race."""
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        last: duckdb.Error | None = None
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                self._db.count_retry()
                time.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
            cursor = self._db.cursor()
            try:
                cursor.execute("BEGIN TRANSACTION")
                result = work(cursor, datetime.now(UTC))
                cursor.execute("COMMIT")
                return result
            except duckdb.Error as error:
                _rollback(cursor)
                if not _is_conflict(error):
                    raise UserDataError(f"could not {what} in {self.path}: {_one_line(error)}") from None
                last = error
            except BaseException:
                _rollback(cursor)
                raise
            finally:
                cursor.close()
        raise UserDataError(
            f"could not {what}: other sessions kept changing the same data at the same moment "
            f"({MAX_ATTEMPTS} attempts, last: {_one_line(last)}); try again"
        )

    def _audit(
        self,
        cursor,
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
            sae_hash, latent, name, status, label, tuple(tags), notes, confidence, reviewer, _time(updated)
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

    # -- annotations -------------------------------------------------------------------------

    def annotation(self, sae_hash: str, latent: int) -> Annotation:
        """A feature's triage state (the defaults, status 'unreviewed', when nobody has touched it)."""
        sae_hash, latent = _feature_key(sae_hash, latent)
        return self._read(lambda cursor: self._annotation_in(cursor, sae_hash, latent)[0])

    def annotate(
        self,
        sae_hash: str,
        sae_name: str | None,
        latent: int,
        reviewer: str,
        *,
        status: str | _Unset = UNSET,
        label: str | None | _Unset = UNSET,
        tags: Iterable[str] | None | _Unset = UNSET,
        notes: str | None | _Unset = UNSET,
        confidence: str | None | _Unset = UNSET,
    ) -> Annotation:
        """Change the given fields of a feature's annotation (others stay as they are).

        One transaction writes the row and one audit row per field whose value changes (an
        unchanged field is not logged; nothing changed writes nothing), all sharing one
        ``edit_id`` so :meth:`undo` can revert the save as a whole. Text is stored as given.
        """
        what = "save the annotation"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        sae_hash, latent = _feature_key(sae_hash, latent)
        sae_name = _sae_name(sae_name)
        reviewer = _reviewer(reviewer)
        wanted: dict[str, object] = {}
        if status is not UNSET:
            if status not in STATUSES:
                raise UserDataError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
            wanted["status"] = status
        if label is not UNSET:
            wanted["label"] = _text(label, "the label", MAX_LABEL)
        if tags is not UNSET:
            wanted["tags"] = _tags(tags)
        if notes is not UNSET:
            wanted["notes"] = _text(notes, "the notes", MAX_NOTES)
        if confidence is not UNSET:
            if confidence is not None and confidence not in CONFIDENCES:
                raise UserDataError(
                    f"unknown confidence {confidence!r}; choose one of {', '.join(CONFIDENCES)}, or none"
                )
            wanted["confidence"] = confidence

        def work(cursor, now: datetime) -> Annotation:
            if wanted.get("tags"):
                known = {
                    row[0] for row in cursor.execute(f"SELECT tag FROM {self._db.table('tag_vocabulary')}").fetchall()
                }
                unknown = [tag for tag in wanted["tags"] if tag not in known]
                if unknown:
                    raise UserDataError(
                        f"unknown tag(s) {', '.join(unknown)}; add them to the vocabulary first "
                        f"(known: {', '.join(sorted(known))})"
                    )
            current, exists = self._annotation_in(cursor, sae_hash, latent)
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
                    (field, _encode(field, getattr(current, field)), _encode(field, changed[field]))
                    for field in FIELDS
                    if field in changed
                ],
                sae_hash=sae_hash,
                sae_name=updated.sae_name,
                latent=latent,
            )
            return updated

        return self._write(what, work)

    def undo(self, sae_hash: str, latent: int, reviewer: str) -> Annotation | None:
        """Revert ``reviewer``'s most recent save on this feature that is not undone yet.

        "Undo my last change": other reviewers' saves are never the target, and a field somebody
        changed since is left alone (their value wins). Repeated undos walk back through the
        reviewer's earlier saves; each save is undone at most once (an 'undo' audit row names it in
        ``undoes``). Returns the annotation afterwards, or None when there is nothing to undo.
        """
        what = "undo the change"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        sae_hash, latent = _feature_key(sae_hash, latent)
        reviewer = _reviewer(reviewer)
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
                field: _decode(field, old)
                for field, old, new, _ in rows
                if _encode(field, getattr(current, field)) == new
            }
            sae_name = current.sae_name or rows[0][3]
            updated = replace(current, reviewer=reviewer, updated_at=now, **restore) if restore else current
            # Written even when nothing is restored, so a concurrent save or undo of this feature conflicts.
            self._save_annotation(cursor, updated, exists)
            changes = [
                (field, _encode(field, getattr(current, field)), _encode(field, restore[field]))
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

    def history(self, sae_hash: str, latent: int) -> pd.DataFrame:
        """Every audit row about this feature (edits, undos, list changes), newest first."""
        sae_hash, latent = _feature_key(sae_hash, latent)
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

    def add_tag(self, tag: str, reviewer: str) -> str:
        """Add ``tag`` (normalised, see :func:`normalise_tag`) to the vocabulary; return its normal form.
        A tag already there is left as it is (and not logged)."""
        what = "add the tag"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        tag = normalise_tag(tag)
        reviewer = _reviewer(reviewer)
        vocabulary = self._db.table("tag_vocabulary")

        def work(cursor, now: datetime) -> str:
            if cursor.execute(f"SELECT 1 FROM {vocabulary} WHERE tag = ?", [tag]).fetchone() is None:
                cursor.execute(f"INSERT INTO {vocabulary} VALUES (?, ?, ?)", [tag, reviewer, now])
                self._audit(cursor, now, reviewer, "tag_added", uuid.uuid4().hex, [("tag", None, tag)])
            return tag

        return self._write(what, work)

    # -- lists -----------------------------------------------------------------------------

    def create_list(self, name: str, reviewer: str, description: str = "") -> FeatureList:
        """Create an empty named list of features (names are unique)."""
        what = "create the list"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        name = _list_name(name)
        reviewer = _reviewer(reviewer)
        description = _text(description, "the description", MAX_DESCRIPTION)
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

    def add_to_list(
        self, name: str, sae_hash: str, sae_name: str | None, latent: int, reviewer: str, note: str = ""
    ) -> ListItem:
        """Put a feature on a list, or change its note if it is there already."""
        what = "add the feature to the list"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        name = _list_name(name)
        sae_hash, latent = _feature_key(sae_hash, latent)
        sae_name = _sae_name(sae_name)
        reviewer = _reviewer(reviewer)
        note = _text(note, "the note", MAX_NOTES)
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
                return ListItem(name, sae_hash, old_name, latent, note, added_by, _time(added_at))
            # DELETE + INSERT rather than UPDATE, so a concurrent removal conflicts (module docstring).
            cursor.execute(
                f"DELETE FROM {items} WHERE name = ? AND sae_hash = ? AND latent = ?", [name, sae_hash, latent]
            )
            cursor.execute(
                f"INSERT INTO {items} VALUES (?, ?, ?, ?, ?, ?, ?)",
                [name, sae_hash, old_name, latent, note, added_by, _time(added_at)],
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
            return ListItem(name, sae_hash, old_name, latent, note, added_by, _time(added_at))

        return self._write(what, work)

    def remove_from_list(self, name: str, sae_hash: str, latent: int, reviewer: str) -> bool:
        """Take a feature off a list; False if it was not on it."""
        what = "remove the feature from the list"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        name = _list_name(name)
        sae_hash, latent = _feature_key(sae_hash, latent)
        reviewer = _reviewer(reviewer)
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
        name = _list_name(name)
        self._read(lambda cursor: self._require_list(cursor, name))
        return self._frame(
            f"""SELECT name, sae_hash, sae_name, latent, note, added_by, epoch_us(added_at) AS added_at
                FROM {self._db.table("list_items")} WHERE name = ? ORDER BY added_at, sae_hash, latent""",
            [name],
            times=["added_at"],
        )

    # -- exports ---------------------------------------------------------------------------

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

    def audit_frame(self) -> pd.DataFrame:
        """The whole audit log, oldest first: who changed what, when, from which value to which."""
        return self._frame(
            f"""SELECT id, epoch_us(changed_at) AS changed_at, reviewer, action, sae_hash, sae_name, latent,
                       list_name, field, old_value, new_value, edit_id, undoes
                FROM {self._db.table("audit")} ORDER BY id""",
            [],
            times=["changed_at"],
        )

    def list_frame(self, name: str) -> pd.DataFrame:
        """A list's features with their annotations, for download (a list shared with others)."""
        name = _list_name(name)
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

    # -- experiments (steering runs, graphs) -------------------------------------------------

    def record_experiment(self, kind: str, reviewer: str, title: str, model_hash: str, record: dict) -> str:
        """Append one experiment with its whole JSON record; returns its id. Never changed afterwards."""
        if kind not in EXPERIMENT_KINDS:
            raise UserDataError(f"unknown experiment kind {kind!r}; known: {', '.join(EXPERIMENT_KINDS)}")
        reviewer = _reviewer(reviewer or ANONYMOUS)
        title = _text(title, "the title", MAX_LABEL)
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

    def delete_experiment(self, experiment_id: str, reviewer: str) -> bool:
        """Delete one experiment (a saved graph the reader no longer wants); the audit log keeps who
        deleted which one, with its kind and title. False if there was no such experiment."""
        what = "delete the experiment"
        if self.read_only:
            raise ReadOnlyError(f"SAEscope is in read-only mode: cannot {what}")
        reviewer = _reviewer(reviewer or ANONYMOUS)
        experiments = self._db.table("experiments")

        def work(cursor, now: datetime) -> bool:
            if not self._db.has_experiments:
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
        if not self._db.has_experiments:
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
        if self._db.has_experiments:
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
            "created_at": _time(created_us).isoformat(),
            "reviewer": reviewer,
            "title": title,
            "record": json.loads(record),
        }
