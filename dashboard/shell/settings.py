"""Where the dashboard finds atlases and user data, and whether it may write: environment first,
then ``.streamlit/saescope.toml``, then defaults.

| setting | environment | saescope.toml key | default |
|---|---|---|---|
| read-only mode (presentations) | ``SAESCOPE_READ_ONLY=1`` | ``read_only = true`` | off |
| folder of atlases to offer | ``SAESCOPE_ATLAS_DIR`` | ``atlas_dir`` | none (the demo atlas only) |
| user-data file | ``SAESCOPE_USER_DB`` | ``user_db`` | ``~/.local/share/saescope/userdata.duckdb`` |
| trusted reverse-proxy header naming the user (off unless set) | ``SAESCOPE_AUTH_HEADER`` | ``auth_header`` | none |
| role of proxy / OIDC users without an account | ``SAESCOPE_DEFAULT_ROLE`` | ``default_role`` | ``viewer`` |
| sign-in lifetime, minutes | ``SAESCOPE_SESSION_MINUTES`` | ``session_minutes`` | ``480`` |
| transcoders for the Graph page: circuit-tracer's transcoder set or CLT (folder or cached hub repo with config.yaml) | ``SAESCOPE_GRAPH_TRANSCODERS`` | ``graph_transcoders`` | none (the atlas's transcoders) |

Sign-in (docs/SECURITY.md): local accounts exist once ``saescope users add`` made one; OpenID Connect
is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section; the proxy header only when set here.
With none of them the dashboard serves one local user, and only on a loopback address.

The product was called Glassbox before; for one release the old names are still read, each with a
one-line notice: ``GLASSBOX_*`` variables, ``.streamlit/glassbox.toml``, and the user-data file at
``~/.local/share/glassbox/userdata.duckdb`` when none exists at the new place yet (used where it is,
never moved, so nothing is lost if the user goes back to the old version).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from analysis.errors import SAEscopeError
from analysis.paths import STREAMLIT_DIR

SETTINGS_FILE = STREAMLIT_DIR / "saescope.toml"
OLD_SETTINGS_FILE = STREAMLIT_DIR / "glassbox.toml"
DEFAULT_USER_DB = Path.home() / ".local" / "share" / "saescope" / "userdata.duckdb"
OLD_DEFAULT_USER_DB = Path.home() / ".local" / "share" / "glassbox" / "userdata.duckdb"
TRUE_WORDS = {"1", "true", "yes", "on"}
PREFIX, OLD_PREFIX = "SAESCOPE_", "GLASSBOX_"


class SettingsError(SAEscopeError, ValueError):
    """A settings file that cannot be read."""


@dataclass(frozen=True)
class Settings:
    read_only: bool
    atlas_dir: Path | None
    user_db: Path
    auth_header: str | None = None
    default_role: str = "viewer"
    session_minutes: float = 480.0
    graph_transcoders: str | None = None
    notices: tuple[str, ...] = field(default=(), compare=False)


def _file_settings(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"could not read the dashboard settings in {path}: {error}") from None


def _env(environ: Mapping[str, str], name: str, notices: list[str]) -> str | None:
    """``SAESCOPE_<name>``, else the pre-rename ``GLASSBOX_<name>`` with a notice."""
    if (value := environ.get(PREFIX + name)) is not None:
        return value
    if (value := environ.get(OLD_PREFIX + name)) is not None:
        notices.append(f"{OLD_PREFIX}{name} is the old name of {PREFIX}{name}; it is read for one more release.")
    return value


def load_settings(
    environ: Mapping[str, str] | None = None,
    settings_file: Path = SETTINGS_FILE,
    old_settings_file: Path = OLD_SETTINGS_FILE,
    default_user_db: Path = DEFAULT_USER_DB,
    old_default_user_db: Path = OLD_DEFAULT_USER_DB,
) -> Settings:
    environ = os.environ if environ is None else environ
    notices: list[str] = []
    file = _file_settings(settings_file)
    if not file and (file := _file_settings(old_settings_file)):
        notices.append(f"{old_settings_file} is read as {settings_file.name} (its old name) for one more release.")
    read_only = _env(environ, "READ_ONLY", notices)
    atlas_dir = _env(environ, "ATLAS_DIR", notices) or file.get("atlas_dir")
    user_db = _env(environ, "USER_DB", notices) or file.get("user_db")
    if not user_db and not default_user_db.exists() and old_default_user_db.is_file():
        notices.append(
            f"Using the user data at {old_default_user_db} (SAEscope's old name); "
            f"move it to {default_user_db} to silence this notice."
        )
        user_db = str(old_default_user_db)
    auth_header = (_env(environ, "AUTH_HEADER", notices) or file.get("auth_header") or "").strip() or None
    default_role = _env(environ, "DEFAULT_ROLE", notices) or file.get("default_role") or "viewer"
    if default_role not in ("viewer", "reviewer", "admin"):
        raise SettingsError(f"default_role must be viewer, reviewer or admin, not {default_role!r}")
    minutes = _env(environ, "SESSION_MINUTES", notices) or file.get("session_minutes") or 480
    try:
        session_minutes = float(minutes)
    except (TypeError, ValueError):
        session_minutes = -1.0
    if not session_minutes > 0:
        raise SettingsError(f"session_minutes must be a positive number of minutes, not {minutes!r}")
    graph_transcoders = (_env(environ, "GRAPH_TRANSCODERS", notices) or file.get("graph_transcoders") or "").strip()
    return Settings(
        auth_header=auth_header,
        graph_transcoders=graph_transcoders or None,
        default_role=default_role,
        session_minutes=session_minutes,
        read_only=(read_only.strip().lower() in TRUE_WORDS) if read_only is not None else bool(file.get("read_only")),
        atlas_dir=Path(atlas_dir).expanduser() if atlas_dir else None,
        user_db=Path(user_db).expanduser() if user_db else default_user_db,
        notices=tuple(notices),
    )
