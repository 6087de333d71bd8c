"""Whether this server may serve at its address: on a network address, only with sign-in configured.

Streamlit-free so that ``saescope dashboard`` checks it before starting Streamlit, and the app
checks it again at every page (a server started with plain ``streamlit run`` gets the same rule).
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Iterable, Mapping
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


def _address_from(streamlit_args: list[str], environ: Mapping[str, str], config_file: Path) -> str | None:
    """The address ``streamlit run`` will bind, by Streamlit's precedence: command line, environment, config file."""
    for index, arg in enumerate(streamlit_args):
        if arg.startswith("--server.address="):
            return arg.split("=", 1)[1]
        if arg == "--server.address" and index + 1 < len(streamlit_args):
            return streamlit_args[index + 1]
    if "STREAMLIT_SERVER_ADDRESS" in environ:
        return environ["STREAMLIT_SERVER_ADDRESS"]
    try:
        return tomllib.loads(config_file.read_text()).get("server", {}).get("address")
    except (OSError, tomllib.TOMLDecodeError):
        return None


def refusal_for_command(streamlit_args: list[str], streamlit_dir: Path, environ: Mapping[str, str]) -> str | None:
    """``saescope dashboard``'s check before it starts Streamlit (the app checks again at each page)."""
    from dashboard.shell.settings import load_settings
    from dashboard.userdata import UserDataError, open_user_store

    address = _address_from(streamlit_args, environ, streamlit_dir / "config.toml")
    if is_loopback(address):
        return None
    settings = load_settings(environ)
    oidc = oidc_configured([streamlit_dir / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"])
    try:
        store = open_user_store(settings.user_db, read_only=True)
        try:
            has_accounts = store.has_accounts()
        finally:
            store.close()
    except UserDataError as error:
        return f"cannot check the user-data file for accounts before serving on a network: {error}"
    return refusal_to_serve(address, settings, has_accounts, oidc)
