"""One process-wide DuckDB session for the dashboard: the user-data file, with every atlas the
pages open ATTACHed read-only beside it, so one SQL query can join a million precomputed
features with the reviewers' annotations.

Why one instance: DuckDB allows one read-write instance of a file per process, and Streamlit
serves every browser session from threads of one process; each page call takes its own cursor.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from analysis.atlas.reader import AtlasError, latent_densities, open_atlas, read_meta, sae_table, token_texts
from analysis.paths import DEMO_ATLAS
from dashboard.shell.settings import Settings
from dashboard.userdata import UserStore, open_user_store


@dataclass(frozen=True)
class Atlas:
    """An attached atlas: ``alias`` is the SQL catalog name its tables live under."""

    path: Path
    alias: str
    meta: dict
    saes: pd.DataFrame  # sae, name, content_hash, hook_name, ... and the quality numbers, by sae
    token_text: tuple[str, ...]
    modified: float
    feature_rows: dict[int, range]  # sae -> its rows of ``features`` (one per latent, in (sae, latent) order)
    densities: dict[str, np.ndarray] = field(default_factory=dict, compare=False)  # SAE name -> by latent, as read

    def sae_index(self, name: str) -> int | None:
        match = self.saes.index[self.saes["name"] == name]  # pyright: ignore[reportCallIssue, reportArgumentType]  (pandas types a column as a union with DataFrame)
        return int(self.saes.loc[match[0], "sae"]) if len(match) else None

    def sae_row(self, sae: int) -> pd.Series:
        return self.saes.loc[self.saes["sae"] == sae].iloc[0]

    def feature_rowid(self, sae: int, latent: int) -> int | None:
        """The ``features`` row of a latent, or None for one the atlas does not have: a filter on
        ``rowid`` (or a range of them) is pruned to the row groups holding it, where one on
        (sae, latent) also scans the row group an SAE boundary shares with the next SAE."""
        rows = self.feature_rows.get(sae)
        return rows[latent] if rows is not None and 0 <= latent < len(rows) else None

    def feature_at(self, rowid: int) -> tuple[int, int]:
        """(sae, latent) of a ``features`` row."""
        return next((sae, rowid - rows.start) for sae, rows in self.feature_rows.items() if rowid in rows)

    @property
    def description(self) -> str:
        """One line saying what this atlas was built from."""
        meta = self.meta
        return (
            f"{self.path.name}: {meta['tokens']:,} tokens of the {meta['corpus']['spec']} corpus in windows of "
            f"{meta['context']}, {int(self.saes['d_sae'].sum()):,} features, built {meta['finished'][:10]}"  # pyright: ignore[reportArgumentType]  (pandas types a column sum as a union with Series)
        )


class Workspace:
    """The user store plus the atlases attached to its connection (re-attached when rebuilt)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store: UserStore = open_user_store(settings.user_db, read_only=settings.read_only)
        self._atlases: dict[Path, Atlas] = {}
        self._lock = threading.Lock()

    def available_atlases(self) -> list[Path]:
        """The demo atlas, then every ``*.duckdb`` in the configured folder."""
        found = [DEMO_ATLAS] if DEMO_ATLAS.is_file() else []
        folder = self.settings.atlas_dir
        if folder is not None and folder.is_dir():
            found += sorted(p.resolve() for p in folder.glob("*.duckdb") if p.resolve() != DEMO_ATLAS.resolve())
        return found

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.store.connection.cursor()

    def atlas_cursor(self, atlas: Atlas) -> duckdb.DuckDBPyConnection:
        """A cursor whose unqualified table names are the atlas's (``USE`` acts on this cursor only),
        for the shared reads of ``analysis/atlas/reader.py``."""
        cursor = self.cursor()
        cursor.execute(f"USE {atlas.alias}")
        return cursor

    def latent_densities(self, atlas: Atlas, sae_names: Iterable[str]) -> dict[str, np.ndarray]:
        """Each named SAE's density array indexed by latent (those the atlas has), read once per
        attached atlas file and SAE: a million densities take longer to read than a page may."""
        names = list(dict.fromkeys(sae_names))
        missing = [name for name in names if name not in atlas.densities]
        if missing:
            atlas.densities.update(latent_densities(self.atlas_cursor(atlas), missing))
        return {name: atlas.densities[name] for name in names if name in atlas.densities}

    def atlas(self, path: Path) -> Atlas:
        """The atlas at ``path``, checked and attached once (again after a rebuild replaced the file).

        Raises ``AtlasError`` with a readable message for anything that is not a current atlas."""
        path = Path(path).resolve()
        modified = path.stat().st_mtime if path.is_file() else -1.0
        with self._lock:
            known = self._atlases.get(path)
            if known is not None and known.modified == modified:
                return known
            atlas = self._attach(path, modified, detach=known)
            self._atlases[path] = atlas
            return atlas

    def _attach(self, path: Path, modified: float, detach: Atlas | None) -> Atlas:
        check = open_atlas(path)  # refuses missing, corrupt, foreign and other-version files
        try:
            meta, saes, token_text = read_meta(check), sae_table(check), token_texts(check)
        finally:
            check.close()
        alias = "atlas_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        cursor = self.cursor()
        if detach is not None:
            cursor.execute(f"DETACH DATABASE IF EXISTS {alias}")
        try:
            cursor.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [str(path)])
        except duckdb.Error as error:
            raise AtlasError(f"could not open {path} next to the user data: {error}") from None
        ends = saes["d_sae"].cumsum()
        feature_rows = {
            int(sae): range(int(end - d), int(end)) for sae, end, d in zip(saes["sae"], ends, saes["d_sae"])
        }
        return Atlas(
            path=path,
            alias=alias,
            meta=meta,
            saes=saes,
            token_text=token_text,
            modified=modified,
            feature_rows=feature_rows,
        )
