"""An account sign-in kept for the other tabs of the same browser, so a reviewer who opens a feature
in a new tab is still themselves there (Streamlit's session state belongs to one tab).

The browser keeps a cookie holding only a random 256-bit token; who it signs in, and since when,
stay in this server process (:data:`SIGNED_IN`), so a forged or copied-over cookie names nobody and
a server restart signs everyone out. The sign-in's own limit (``session_minutes`` from signing in)
still applies in every tab, and signing out in one tab ends it in all.

Streamlit lets a script read the request's cookies (``st.context.cookies``) but not set one, so the
page sets it with a one-line script through ``st.html(unsafe_allow_javascript=True)``: the only
text in it is the token (URL-safe characters) and fixed words, never anything a user typed.
Path=/ and SameSite=Strict; Secure when the page came over https; the port is in the cookie's name,
as cookies are shared by every port of a host. The cookie is not HttpOnly (a script wrote it): the
dashboard shows all user, atlas and URL text as plain text, so no other script runs in its pages.
"""

from __future__ import annotations

import hashlib
import secrets
import threading

import streamlit as st

from dashboard.shell.identity import Identity

_PENDING = "sign_in_cookie"  # this session's cookie script, drawn on its next run (a sign-in reruns)
_TOKEN = "sign_in_token"  # the token this session signed in with (the cookie it started with may be older)


class SignedInBrowsers:
    """Token digest -> (identity, monotonic time of sign-in), for the whole server process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[Identity, float]] = {}

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def add(self, identity: Identity, since: float) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[self._digest(token)] = (identity, since)
        return token

    def get(self, token: str) -> tuple[Identity, float] | None:
        with self._lock:
            return self._tokens.get(self._digest(token))

    def forget(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(self._digest(token), None)


SIGNED_IN = SignedInBrowsers()


def _cookie_name() -> str:
    return f"saescope_sign_in_{st.get_option('server.port')}"


def _cookie() -> str | None:
    """The token this browser sent when the tab opened (a session without a request, as under
    AppTest, has no text here: that counts as none)."""
    token = st.context.cookies.get(_cookie_name())
    return token if isinstance(token, str) and token else None


def _cookie_script(value: str, max_age_s: int) -> str:
    return (
        f"<script>document.cookie = '{_cookie_name()}={value}; Max-Age={max_age_s}; Path=/; SameSite=Strict'"
        " + (location.protocol === 'https:' ? '; Secure' : '');</script>"
    )


def remember(identity: Identity, since: float, lifetime_s: float) -> None:
    """Keep this sign-in for the browser's other tabs (the cookie is set on this session's next run)."""
    token = SIGNED_IN.add(identity, since)
    st.session_state[_TOKEN] = token
    st.session_state[_PENDING] = _cookie_script(token, max(int(lifetime_s), 1))


def recalled() -> tuple[Identity, float] | None:
    """The sign-in this browser's cookie stands for, if this server made it and it is not forgotten;
    an unknown cookie is cleared."""
    token = _cookie()
    if token is None:
        return None
    signed_in = SIGNED_IN.get(token)
    if signed_in is None:
        st.session_state[_PENDING] = _cookie_script("", 0)
    else:
        st.session_state[_TOKEN] = token
    return signed_in


def ended_elsewhere() -> bool:
    """Whether this session's browser sign-in was ended since (signed out in another tab)."""
    token = st.session_state.get(_TOKEN)
    return token is not None and SIGNED_IN.get(token) is None


def forget() -> None:
    """Sign this browser out in every tab: the token stops naming anyone and the cookie is cleared."""
    for token in (st.session_state.pop(_TOKEN, None), _cookie()):
        if token:
            SIGNED_IN.forget(token)
    st.session_state[_PENDING] = _cookie_script("", 0)


def write_cookie() -> None:
    """Draw the pending cookie script, if any (in the sidebar, out of the page's way)."""
    if script := st.session_state.pop(_PENDING, None):
        st.sidebar.html(script, unsafe_allow_javascript=True)
