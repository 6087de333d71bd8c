"""Where the dashboard finds atlases and user data, and whether it may write: environment first,
then ``.streamlit/glassbox.toml``, then defaults.

| setting | environment | glassbox.toml key | default |
|---|---|---|---|
| read-only mode (presentations) | ``GLASSBOX_READ_ONLY=1`` | ``read_only = true`` | off |
| folder of atlases to offer | ``GLASSBOX_ATLAS_DIR`` | ``atlas_dir`` | none (the demo atlas only) |
| user-data file | ``GLASSBOX_USER_DB`` | ``user_db`` | ``~/.local/share/glassbox/userdata.duckdb`` |
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SETTINGS_FILE = REPO_ROOT / ".streamlit" / "glassbox.toml"
DEMO_ATLAS = REPO_ROOT / "data" / "demo" / "atlas.duckdb"
DEFAULT_USER_DB = Path.home() / ".local" / "share" / "glassbox" / "userdata.duckdb"
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    read_only: bool
    atlas_dir: Path | None
    user_db: Path


def _file_settings(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"could not read the dashboard settings in {path}: {error}") from None


def load_settings(environ: dict[str, str] | None = None, settings_file: Path = SETTINGS_FILE) -> Settings:
    environ = os.environ if environ is None else environ
    file = _file_settings(settings_file)
    read_only = environ.get("GLASSBOX_READ_ONLY")
    atlas_dir = environ.get("GLASSBOX_ATLAS_DIR") or file.get("atlas_dir")
    user_db = environ.get("GLASSBOX_USER_DB") or file.get("user_db")
    return Settings(
        read_only=(read_only.strip().lower() in TRUE_WORDS) if read_only is not None else bool(file.get("read_only")),
        atlas_dir=Path(atlas_dir).expanduser() if atlas_dir else None,
        user_db=Path(user_db).expanduser() if user_db else DEFAULT_USER_DB,
    )
