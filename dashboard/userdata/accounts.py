"""Local accounts (name, role, scrypt hash), who may open which atlas, and refusals, all audited.

The audit log gets one row per grant, revoke, role change, password reset, refused write and
refused sign-in; a password or its hash never goes there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from dashboard.userdata.base import StoreBase
from dashboard.userdata.errors import UserDataError
from dashboard.userdata.passwords import DUMMY_HASH, hash_password, verify_password
from dashboard.userdata.transactions import writes
from dashboard.userdata.validation import (
    MAX_DESCRIPTION,
    from_epoch_us,
    valid_account_name,
    valid_principal,
    valid_reviewer,
    valid_role,
    valid_text,
)


@dataclass(frozen=True)
class Account:
    name: str
    role: str


class Accounts(StoreBase):
    """Accounts and atlas access. An older file opened read-only has neither (reads as none)."""

    def _account_row(self, cursor: duckdb.DuckDBPyConnection, name: str) -> tuple[str, str] | None:
        row = cursor.execute(
            f"SELECT role, password_hash FROM {self._db.table('accounts')} WHERE name = ?", [name]
        ).fetchone()
        return (row[0], row[1]) if row else None

    def has_accounts(self) -> bool:
        """Whether any local account exists (then the dashboard asks everyone to sign in)."""
        if not self._db.has("accounts"):
            return False
        return (
            self._read(lambda cursor: cursor.execute(f"SELECT 1 FROM {self._db.table('accounts')} LIMIT 1").fetchone())
            is not None
        )

    def accounts(self) -> pd.DataFrame:
        """Every account's name, role and creation, by name (no hashes)."""
        if not self._db.has("accounts"):
            return pd.DataFrame(columns=["name", "role", "created_by", "created_at"])
        return self._frame(
            f"""SELECT name, role, created_by, epoch_us(created_at) AS created_at
                FROM {self._db.table("accounts")} ORDER BY name""",
            [],
            times=["created_at"],
        )

    def account(self, name: str) -> Account | None:
        """The account of this name, or None."""
        if not self._db.has("accounts"):
            return None
        name = valid_account_name(name)
        row = self._read(lambda cursor: self._account_row(cursor, name))
        return Account(name, row[0]) if row else None

    def authenticate(self, name: str, password: str) -> Account | None:
        """The account when ``password`` is its password; None otherwise (an unknown name costs the
        same hashing time, so timing does not tell which names exist)."""
        try:
            name = valid_account_name(name)
        except UserDataError:
            verify_password(str(password), DUMMY_HASH)
            return None
        row = self._read(lambda cursor: self._account_row(cursor, name)) if self._db.has("accounts") else None
        if row is None:
            verify_password(str(password), DUMMY_HASH)
            return None
        return Account(name, row[0]) if verify_password(str(password), row[1]) else None

    @writes("add the user")
    def add_account(self, name: str, role: str, password: str, by: str) -> Account:
        name, role, by = valid_account_name(name), valid_role(role), valid_reviewer(by)
        hashed = hash_password(password)
        accounts = self._db.table("accounts")

        def work(cursor: duckdb.DuckDBPyConnection, now: datetime) -> Account:
            if self._account_row(cursor, name) is not None:
                raise UserDataError(f"there is already a user named {name!r}")
            cursor.execute(f"INSERT INTO {accounts} VALUES (?, ?, ?, ?, ?)", [name, role, hashed, by, now])
            self._audit_subject(cursor, now, by, "user_add", name, "role", None, role)
            return Account(name, role)

        return self._write("add the user", work)

    def _audit_subject(
        self,
        cursor: duckdb.DuckDBPyConnection,
        now: datetime,
        by: str,
        action: str,
        subject: str,
        field: str | None,
        old: str | None,
        new: str | None,
    ) -> None:
        """One audit row about an account or atlas: ``subject`` goes in ``list_name`` (the log's
        column for what a change is about when it is not a feature)."""
        self._audit(cursor, now, by, action, uuid.uuid4().hex, [(field, old, new)], list_name=subject)

    def _change_account(self, name: str, by: str, what: str, action: str, change) -> Account:
        """Replace an account's row (DELETE + INSERT, as everywhere in the store) with ``change(role, hash)``."""
        name, by = valid_account_name(name), valid_reviewer(by)
        accounts = self._db.table("accounts")

        def work(cursor: duckdb.DuckDBPyConnection, now: datetime) -> Account:
            row = cursor.execute(
                f"SELECT role, password_hash, created_by, epoch_us(created_at) FROM {accounts} WHERE name = ?", [name]
            ).fetchone()
            if row is None:
                raise UserDataError(f"there is no user named {name!r}")
            role, hashed, created_by, created_us = row
            new_role, new_hash, field, old, new = change(role, hashed)
            cursor.execute(f"DELETE FROM {accounts} WHERE name = ?", [name])
            if new_role is not None:
                cursor.execute(
                    f"INSERT INTO {accounts} VALUES (?, ?, ?, ?, ?)",
                    [name, new_role, new_hash, created_by, from_epoch_us(created_us)],
                )
            self._audit_subject(cursor, now, by, action, name, field, old, new)
            return Account(name, new_role or role)

        return self._write(what, work)

    @writes("remove the user")
    def remove_account(self, name: str, by: str) -> None:
        self._change_account(
            name, by, "remove the user", "user_remove", lambda role, _: (None, None, "role", role, None)
        )

    @writes("change the user's role")
    def set_role(self, name: str, role: str, by: str) -> Account:
        role = valid_role(role)
        return self._change_account(
            name, by, "change the user's role", "user_role", lambda old, hashed: (role, hashed, "role", old, role)
        )

    @writes("reset the password")
    def reset_password(self, name: str, password: str, by: str) -> Account:
        hashed = hash_password(password)
        return self._change_account(
            name, by, "reset the password", "user_reset", lambda role, _: (role, hashed, "password", None, "reset")
        )

    # -- atlas access ------------------------------------------------------------------------

    def atlas_grants(self) -> dict[str, set[str]]:
        """Atlas key -> the principals ('user:<name>', 'role:<role>') it is opened to; an atlas with
        no entry is open to every signed-in user."""
        if not self._db.has("atlas_access"):
            return {}
        rows = self._read(
            lambda cursor: cursor.execute(f"SELECT atlas, principal FROM {self._db.table('atlas_access')}").fetchall()
        )
        grants: dict[str, set[str]] = {}
        for atlas, principal in rows:
            grants.setdefault(atlas, set()).add(principal)
        return grants

    @writes("grant access to the atlas")
    def grant_atlas(self, atlas: str, principal: str, by: str) -> bool:
        """Open ``atlas`` to ``principal`` (a user name or 'role:<role>'); the first grant restricts
        the atlas to its grantees. False when it was granted already."""
        atlas = valid_text(atlas, "the atlas name", MAX_DESCRIPTION).strip()
        principal, by = valid_principal(principal), valid_reviewer(by)
        table = self._db.table("atlas_access")

        def work(cursor: duckdb.DuckDBPyConnection, now: datetime) -> bool:
            if cursor.execute(
                f"SELECT 1 FROM {table} WHERE atlas = ? AND principal = ?", [atlas, principal]
            ).fetchone():
                return False
            cursor.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?)", [atlas, principal, by, now])
            self._audit_subject(cursor, now, by, "atlas_grant", atlas, "principal", None, principal)
            return True

        return self._write("grant access to the atlas", work)

    @writes("revoke access to the atlas")
    def revoke_atlas(self, atlas: str, principal: str, by: str) -> bool:
        """Take a grant back; False when there was none. Revoking the last grant opens the atlas to all."""
        atlas = valid_text(atlas, "the atlas name", MAX_DESCRIPTION).strip()
        principal, by = valid_principal(principal), valid_reviewer(by)
        table = self._db.table("atlas_access")

        def work(cursor: duckdb.DuckDBPyConnection, now: datetime) -> bool:
            if not cursor.execute(
                f"SELECT 1 FROM {table} WHERE atlas = ? AND principal = ?", [atlas, principal]
            ).fetchone():
                return False
            cursor.execute(f"DELETE FROM {table} WHERE atlas = ? AND principal = ?", [atlas, principal])
            self._audit_subject(cursor, now, by, "atlas_revoke", atlas, "principal", principal, None)
            return True

        return self._write("revoke access to the atlas", work)

    # -- refusals ------------------------------------------------------------------------------

    @writes("record the refusal")
    def record_refusal(self, who: str, action: str, what: str, detail: str = "") -> None:
        """Log a refused write or sign-in (``action`` 'write_refused' or 'signin_refused')."""
        who = valid_reviewer(who)
        what = valid_text(what, "the refused action", MAX_DESCRIPTION)
        detail = valid_text(detail, "the detail", MAX_DESCRIPTION)

        def work(cursor: duckdb.DuckDBPyConnection, now: datetime) -> None:
            self._audit(cursor, now, who, action, uuid.uuid4().hex, [(what, None, detail or None)])

        self._write("record the refusal", work)
