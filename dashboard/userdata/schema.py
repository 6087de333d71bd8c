"""The user-data file's tables: the version-1 schema, then one migration per later version, in order.

A new file gets version 1's tables and every migration, in one transaction, so a new file and an
upgraded one have the same tables by construction. Adding a table or column is: bump
``SCHEMA_VERSION``, append a migration to ``MIGRATIONS``, name new tables in ``TABLES``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dashboard.userdata.errors import UserDataError
from dashboard.userdata.transactions import schema_transaction
from dashboard.userdata.validation import CONFIDENCES, SEED_AUTHOR, SEED_TAGS, STATUSES

Qualify = Callable[[str], str]  # a table name -> its name qualified with the file's catalog
Migration = Callable[[duckdb.DuckDBPyConnection, Qualify], None]

SCHEMA_VERSION = 3  # 2 added the experiments table (steering runs, later graphs); 3 accounts and atlas access
VERSION_1_TABLES = ("annotations", "audit", "tag_vocabulary", "lists", "list_items")
TABLES = ("user_meta", *VERSION_1_TABLES, "experiments", "accounts", "atlas_access")


def _create_version_1(cursor: duckdb.DuckDBPyConnection, t: Qualify) -> None:
    status_check = ", ".join(f"'{s}'" for s in STATUSES)
    confidence_check = ", ".join(f"'{c}'" for c in CONFIDENCES)
    now = datetime.now(UTC)
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
    cursor.executemany(
        f"INSERT INTO {t('user_meta')} VALUES (?, ?)", [("schema_version", "1"), ("created_at", now.isoformat())]
    )
    cursor.executemany(
        f"INSERT INTO {t('tag_vocabulary')} VALUES (?, ?, ?)", [(tag, SEED_AUTHOR, now) for tag in SEED_TAGS]
    )


def _add_experiments(cursor: duckdb.DuckDBPyConnection, t: Qualify) -> None:
    """1 -> 2. Rows are never edited (a delete is kept in the audit log); ``record`` is the whole JSON."""
    cursor.execute(f"""CREATE TABLE {t("experiments")} (
        id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL,
        reviewer VARCHAR NOT NULL, title VARCHAR NOT NULL, model_hash VARCHAR NOT NULL,
        record VARCHAR NOT NULL)""")


def _add_accounts(cursor: duckdb.DuckDBPyConnection, t: Qualify) -> None:
    """2 -> 3. Local accounts (role, scrypt hash) and who may open which atlas. No rows in
    ``accounts`` means no local sign-in; no rows for an atlas means every signed-in user may open it."""
    cursor.execute(f"""CREATE TABLE {t("accounts")} (
        name VARCHAR PRIMARY KEY, role VARCHAR NOT NULL CHECK (role IN ('viewer', 'reviewer', 'admin')),
        password_hash VARCHAR NOT NULL, created_by VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL)""")
    # ``principal`` is 'user:<name>' or 'role:<role>'.
    cursor.execute(f"""CREATE TABLE {t("atlas_access")} (
        atlas VARCHAR NOT NULL, principal VARCHAR NOT NULL, granted_by VARCHAR NOT NULL,
        granted_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (atlas, principal))""")


MIGRATIONS: dict[int, Migration] = {1: _add_experiments, 2: _add_accounts}  # from version N to N + 1, applied in order
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION)), "one migration per version step"


def _upgrade(cursor: duckdb.DuckDBPyConnection, t: Qualify, version: int) -> None:
    for step in range(version, SCHEMA_VERSION):
        MIGRATIONS[step](cursor, t)
    cursor.execute(f"DELETE FROM {t('user_meta')} WHERE key = 'schema_version'")
    cursor.execute(f"INSERT INTO {t('user_meta')} VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])


def prepare(connection: duckdb.DuckDBPyConnection, catalog: str, t: Qualify, path: Path, create: bool) -> set[str]:
    """Check the file's schema version; create the schema in a new (empty) file and migrate an old
    one when ``create`` (a read-write open). Returns the tables the file has afterwards (a file of an
    older version opened read-only lacks the later ones; readers treat them as empty)."""
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?", [catalog]
        ).fetchall()
    }
    if not tables:
        if not create:
            raise UserDataError(f"{path} holds no SAEscope user data yet; open it read-write once to create it")
        with schema_transaction(connection) as cursor:
            _create_version_1(cursor, t)
            _upgrade(cursor, t, 1)
        return set(TABLES)
    if "user_meta" not in tables:
        raise UserDataError(
            f"{path} is a DuckDB file but not a SAEscope user-data file (no user_meta table; is it an atlas?)"
        )
    row = connection.execute(f"SELECT value FROM {t('user_meta')} WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row else None
    except ValueError:
        version = None
    if version is None or version < 1:
        raise UserDataError(f"{path} has no readable schema version in user_meta; it is damaged")
    if version > SCHEMA_VERSION:
        raise UserDataError(
            f"{path} was written by a newer SAEscope (user-data schema version {version}; this SAEscope "
            f"reads up to version {SCHEMA_VERSION}); upgrade SAEscope or use another user-data file"
        )
    missing = set(VERSION_1_TABLES) - tables
    if missing:
        raise UserDataError(f"{path} is missing tables {sorted(missing)}; it is damaged")
    if version < SCHEMA_VERSION and create:
        with schema_transaction(connection) as cursor:
            _upgrade(cursor, t, version)
        return set(TABLES)
    return tables
