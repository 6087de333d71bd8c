"""Sign-in for every page: who the user is, from (in this order) a trusted proxy header, this
session's sign-in (a local account or OpenID Connect through Streamlit's ``st.login``), or the single
default local user when no sign-in is configured and the server is on a loopback address.

Sign-ins last ``session_minutes`` (then the user signs in again); failed ones are limited per name
(``MAX_FAILURES`` in ``FAILURE_WINDOW_S``) and audited. A session's state lives on the server and
belongs to one tab; an account sign-in holds for the browser's other tabs and reloads too, through a
cookie with a random token (:mod:`dashboard.shell.browser_sign_in`); OIDC's own cookie does the same.
"""

from __future__ import annotations

import getpass
import threading
import time
from collections import deque

import streamlit as st

from dashboard.shell import browser_sign_in
from dashboard.shell.exposure import oidc_configured, refusal_to_serve
from dashboard.shell.identity import Identity
from dashboard.shell.settings import Settings
from dashboard.userdata import UserDataError, UserStore
from dashboard.userdata.validation import valid_account_name

MAX_FAILURES = 5
FAILURE_WINDOW_S = 15 * 60.0
_SESSION_KEY = "signed_in"  # (Identity, monotonic time of sign-in) in st.session_state


class FailedSignIns:
    """Failed sign-ins per (user-data file, name) in the last window, for the whole server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def wait_s(self, key: tuple[str, str]) -> float:
        """Seconds until ``key`` may try again (0 when it may now)."""
        now = time.monotonic()
        with self._lock:
            recent = self._failures.get(key, deque())
            while recent and now - recent[0] > FAILURE_WINDOW_S:
                recent.popleft()
            return FAILURE_WINDOW_S - (now - recent[0]) if len(recent) >= MAX_FAILURES else 0.0

    def fail(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(time.monotonic())

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)


FAILED = FailedSignIns()


def _local_user() -> str:
    try:
        return valid_account_name(getpass.getuser())
    except (OSError, KeyError, UserDataError):
        return "local"


def _refuse_sign_in(store: UserStore, name: str, reason: str) -> None:
    try:
        who = valid_account_name(name)
    except UserDataError:
        who = "(not a valid name)"
    try:
        store.record_refusal(who, "signin_refused", "sign in", reason)
    except UserDataError:
        pass  # a read-only store cannot log it


def _role_of(store: UserStore, name: str, settings: Settings) -> str:
    account = store.account(name)
    return account.role if account else settings.default_role


def _from_proxy(settings: Settings, store: UserStore) -> Identity:
    header = settings.auth_header or ""
    value = (st.context.headers.get(header) or "").strip()
    if not value:
        st.error(
            f"This server takes who you are from the {header} header set by its reverse proxy, and this "
            "request has none: open SAEscope through the proxy."
        )
        st.stop()
    try:
        name = valid_account_name(value)
    except UserDataError as error:
        st.error(f"The proxy's {header} header does not hold a usable user name: {error}")
        st.stop()
    return Identity(name, _role_of(store, name, settings), "proxy")


def _sign_in_form(settings: Settings, store: UserStore, oidc: bool, has_accounts: bool) -> None:
    st.title("Sign in to SAEscope")
    if oidc and st.button("Sign in with your organisation's identity provider", type="primary"):
        st.login()
    if not has_accounts:
        return
    with st.form("sign_in"):
        name = st.text_input("User name", max_chars=100)
        password = st.text_input("Password", type="password", max_chars=1024)
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    key = (str(store.path), name.strip().lower())
    wait = FAILED.wait_s(key)
    if wait > 0:
        _refuse_sign_in(store, name, "too many failed sign-ins")
        st.error(f"Too many failed sign-ins for this name: try again in {wait / 60:.0f} minutes.")
        return
    account = store.authenticate(name, password)
    if account is None:
        FAILED.fail(key)
        _refuse_sign_in(store, name, "wrong name or password")
        st.error("Wrong user name or password.")
        return
    FAILED.forget(key)
    signed_in = (Identity(account.name, account.role, "account"), time.monotonic())
    st.session_state[_SESSION_KEY] = signed_in
    browser_sign_in.remember(*signed_in, lifetime_s=settings.session_minutes * 60)
    st.rerun()


def _session_identity(settings: Settings, store: UserStore, oidc: bool) -> Identity | None:
    """This session's signed-in user, with the role the store gives them now; None when signed out
    or expired (then the user is told)."""
    if browser_sign_in.ended_elsewhere():  # signed out in another tab of this browser
        sign_out()
    signed_in = st.session_state.get(_SESSION_KEY)
    if signed_in is None and (signed_in := browser_sign_in.recalled()) is not None:  # signed in in another tab
        st.session_state[_SESSION_KEY] = signed_in
    if signed_in is None and oidc and st.user.is_logged_in:
        name = str(st.user.get("email") or st.user.get("sub") or "")
        try:
            name = valid_account_name(name)
        except UserDataError as error:
            st.error(f"The identity provider's user name is not usable here: {error}")
            st.stop()
        signed_in = (Identity(name, settings.default_role, "oidc"), time.monotonic())
        st.session_state[_SESSION_KEY] = signed_in
    if signed_in is None:
        return None
    identity, since = signed_in
    if time.monotonic() - since > settings.session_minutes * 60:
        sign_out()
        st.warning(f"Your sign-in expired after {settings.session_minutes:g} minutes: sign in again.")
        return None
    if identity.source == "account":
        account = store.account(identity.name)
        if account is None:
            sign_out()
            st.warning(f"The account {identity.name} no longer exists.")
            return None
        return Identity(identity.name, account.role, "account")
    return Identity(identity.name, _role_of(store, identity.name, settings), identity.source)


def sign_out() -> None:
    signed_in = st.session_state.pop(_SESSION_KEY, None)
    browser_sign_in.forget()
    if signed_in is not None and signed_in[0].source == "oidc":
        st.logout()


def current_identity(settings: Settings, store: UserStore) -> Identity:
    """The user of this page; shows the sign-in form (or a refusal) and stops the page when there is none."""
    has_accounts = store.has_accounts()
    oidc = oidc_configured(st.get_option("secrets.files") or [])
    refusal = refusal_to_serve(st.get_option("server.address"), settings, has_accounts, oidc)
    if refusal:
        st.error(refusal)
        st.stop()
    if settings.auth_header:
        return _from_proxy(settings, store)
    identity = _session_identity(settings, store, oidc)
    browser_sign_in.write_cookie()
    if identity is not None:
        return identity
    if not has_accounts and not oidc:
        return Identity(_local_user(), "admin", "local")  # one person on their own machine
    _sign_in_form(settings, store, oidc, has_accounts)
    st.stop()
