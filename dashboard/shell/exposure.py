"""Whether this server may serve at its address: on a network address, only with sign-in configured.

Streamlit-free so that ``saescope dashboard`` checks it before starting Streamlit, and the app
checks it again at every page (a server started with plain ``streamlit run`` gets the same rule).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable
from pathlib import Path

from dashboard.shell.settings import Settings


def is_loopback(address: str | None) -> bool:
    """Whether Streamlit bound to ``address`` is reachable from this machine only. Empty means
    Streamlit's default, every interface."""
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def oidc_configured(secret_files: Iterable[str | Path]) -> bool:
    """Whether a Streamlit secrets file has an ``[auth]`` section (Streamlit's ``st.login`` settings)."""
    for path in map(Path, secret_files):
        try:
            if path.is_file() and "auth" in tomllib.loads(path.read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


def refusal_to_serve(address: str | None, settings: Settings, has_accounts: bool, oidc: bool) -> str | None:
    """Why this server must not serve (None when it may): a network address with no sign-in."""
    if is_loopback(address) or has_accounts or oidc or settings.auth_header:
        return None
    where = f"address {address}" if address else "every network interface (server.address is not set)"
    return (
        f"SAEscope refuses to serve on {where} without sign-in: anyone on the network could label features "
        "under any name. Add an account (saescope users add NAME --role admin), configure OIDC "
        "([auth] in .streamlit/secrets.toml) or a trusted proxy header (auth_header), or serve on "
        "127.0.0.1 (server.address in .streamlit/config.toml). See docs/SECURITY.md."
    )
