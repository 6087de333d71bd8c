"""Every read of an atlas, in one place: opening one (version check and migrations) and the
lookups the CLI, the graphs and the dashboard share.

Each function takes an ``AtlasSource``: a path (opened read-only and closed after) or an open
connection, which is used as it is and left open. The dashboard passes a cursor of its workspace
whose default catalog is the attached atlas (``Workspace.atlas_cursor``), so no page opens a
second connection to the file. Torch-free on purpose: the browse pages import this.

The dashboard's filtered, sorted and paged feature queries stay in
``dashboard/browse/feature_queries.py``: they join the reviewers' annotations in the user-data
file and address features by ``rowid``, which only the workspace's attached catalog offers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from analysis.atlas.contract import MIGRATIONS, SCHEMA_VERSION, TABLE_NAMES, Migration, migration_path
from analysis.errors import SAEscopeError

AtlasSource = str | Path | duckdb.DuckDBPyConnection


class AtlasError(SAEscopeError, ValueError):
    """An atlas file that cannot be read: missing, corrupt, unfinished, or of another schema version."""


def open_atlas(path: str | Path, migrations: tuple[Migration, ...] = MIGRATIONS) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-only after checking it is a finished atlas of the schema this code knows.

    An atlas of an older version is first brought up to date in place when ``migrations`` lead
    from its version to this one; otherwise it is refused, as is a newer one, with one line."""
    path = Path(path)
    connection = _connect(path, read_only=True)
    try:
        version = _version(path, connection)
        if version != SCHEMA_VERSION:
            steps = migration_path(version, migrations) if isinstance(version, int) else None
            if not steps:
                newer = isinstance(version, int) and version > SCHEMA_VERSION
                raise AtlasError(
                    f"{path} has atlas schema version {version}; this SAEscope reads version {SCHEMA_VERSION}. "
                    + ("Upgrade SAEscope to read it." if newer else "Rebuild it with `python -m analysis precompute`.")
                )
            connection.close()
            _migrate(path, steps)
            connection = _connect(path, read_only=True)
        missing = set(TABLE_NAMES) - _tables(connection)
        if missing:
            raise AtlasError(f"{path} is missing tables {sorted(missing)}: it is unfinished or damaged")
    except AtlasError:
        connection.close()
        raise
    return connection


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    if not path.is_file():
        raise AtlasError(f"no atlas at {path}")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as error:
        raise AtlasError(f"{path} is not a readable DuckDB file (corrupt or not an atlas): {error}") from None


def _tables(connection: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def _version(path: Path, connection: duckdb.DuckDBPyConnection) -> object:
    """The schema version ``meta`` records (None when it records none); refuses non-atlases."""
    if "meta" not in _tables(connection):
        raise AtlasError(f"{path} is a DuckDB file but not a SAEscope atlas (no meta table)")
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return json.loads(row[0]) if row else None


def _migrate(path: Path, steps: list[Migration]) -> None:
    """Apply ``steps`` and record the new version in one transaction: the file is migrated whole or not at all."""
    try:
        connection = duckdb.connect(str(path))
    except duckdb.Error as error:
        raise AtlasError(f"{path} needs a schema migration but cannot be opened for writing: {error}") from None
    try:
        connection.execute("BEGIN TRANSACTION")
        for step in steps:
            for statement in step.statements:
                connection.execute(statement)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [json.dumps(SCHEMA_VERSION)])
        connection.execute("COMMIT")
        connection.execute("CHECKPOINT")
    except duckdb.Error as error:
        connection.execute("ROLLBACK")
        raise AtlasError(f"could not migrate {path} to atlas schema version {SCHEMA_VERSION}: {error}") from None
    finally:
        connection.close()


@contextmanager
def _connected(atlas: AtlasSource) -> Iterator[duckdb.DuckDBPyConnection]:
    """``atlas`` itself when it is a connection (left open), else the file opened read-only and closed after."""
    if isinstance(atlas, duckdb.DuckDBPyConnection):
        yield atlas
        return
    connection = open_atlas(atlas)
    try:
        yield connection
    finally:
        connection.close()


def read_meta(atlas: AtlasSource) -> dict:
    """The ``meta`` table as a dict of its decoded JSON values."""
    with _connected(atlas) as connection:
        rows = connection.execute("SELECT key, value FROM meta").fetchall()
    return {key: json.loads(value) for key, value in rows}


def sae_table(atlas: AtlasSource, quality_sums: bool = False) -> pd.DataFrame:
    """The ``saes`` table in ``sae`` order; ``quality_sums`` (a JSON as long as the SAE is wide,
    needed only for merging) is left out unless asked for."""
    columns = "*" if quality_sums else "* EXCLUDE (quality_sums)"
    with _connected(atlas) as connection:
        return connection.execute(f"SELECT {columns} FROM saes ORDER BY sae").df()


def sae_records(atlas: AtlasSource, quality_sums: bool = False) -> list[dict]:
    """The ``saes`` rows as plain dicts (NULL stays None: a DataFrame would turn a residual SAE's
    missing ``hook_name_out`` into NaN, which merge would then write back as a hook name)."""
    columns = "*" if quality_sums else "* EXCLUDE (quality_sums)"
    with _connected(atlas) as connection:
        cursor = connection.execute(f"SELECT {columns} FROM saes ORDER BY sae")
        names = [c[0] for c in cursor.description or []]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def token_texts(atlas: AtlasSource) -> tuple[str, ...]:
    """The decoded string of every vocabulary id, indexed by id."""
    with _connected(atlas) as connection:
        return tuple(text for (text,) in connection.execute("SELECT text FROM tokens ORDER BY token").fetchall())


def token_counts(atlas: AtlasSource) -> np.ndarray:
    """Each vocabulary id's count over the processed non-special tokens, indexed by id."""
    with _connected(atlas) as connection:
        return np.asarray(
            connection.execute("SELECT corpus_count FROM tokens ORDER BY token").fetchnumpy()["corpus_count"]
        )


def documents_per_domain(atlas: AtlasSource) -> pd.DataFrame:
    """Columns ``domain`` and ``documents`` (how many of the corpus's documents it has), most first."""
    with _connected(atlas) as connection:
        return connection.execute(
            "SELECT domain, count(*) AS documents FROM documents GROUP BY domain ORDER BY documents DESC, domain"
        ).df()


def latent_densities(atlas: AtlasSource, sae_names: Iterable[str]) -> dict[str, np.ndarray]:
    """Each named SAE's latent densities (float64, indexed by latent), for those the atlas has;
    names it lacks are left out, so the caller decides whether that matters."""
    names = list(dict.fromkeys(sae_names))
    densities = {}
    with _connected(atlas) as connection:
        sizes = connection.execute("SELECT name, sae, d_sae FROM saes WHERE list_contains(?, name)", [names]).fetchall()
        for name, sae, d_sae in sizes:
            columns = connection.execute(
                "SELECT latent, density FROM features WHERE sae = ? ORDER BY latent", [sae]
            ).fetchnumpy()
            values = np.full(int(d_sae), np.nan)
            values[columns["latent"]] = columns["density"]
            densities[name] = values
    return densities


def feature_labels(atlas: AtlasSource, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The automatic label of each (SAE name, latent) the atlas has ('' for a latent it left
    unlabelled); keys it lacks (unknown SAE or latent) are left out."""
    pairs = list(dict.fromkeys(keys))
    if not pairs:
        return {}
    with _connected(atlas) as connection:
        rows = connection.execute(
            "SELECT q.name, q.latent, coalesce(f.label, '') "
            "FROM (SELECT unnest(?::VARCHAR[]) AS name, unnest(?::INTEGER[]) AS latent) q "
            "JOIN saes s ON s.name = q.name JOIN features f ON f.sae = s.sae AND f.latent = q.latent",
            [[name for name, _ in pairs], [int(latent) for _, latent in pairs]],
        ).fetchall()
    return {(name, latent): label for name, latent, label in rows}


@dataclass(frozen=True)
class LatentSummary:
    """What the atlas says of a latent in one line: enough to label it and scale a steering coefficient."""

    sae: int
    latent: int
    max_act: float
    density: float
    label: str


def latent_summary(atlas: AtlasSource, sae_name: str, latent: int) -> LatentSummary | None:
    """One latent's max activation, density and automatic label, or None when the atlas has no
    such SAE or latent. The SAE's index is looked up first, so the features scan is pruned to it."""
    with _connected(atlas) as connection:
        found = connection.execute("SELECT sae FROM saes WHERE name = ?", [sae_name]).fetchone()
        if found is None:
            return None
        row = connection.execute(
            "SELECT max_act, density, label FROM features WHERE sae = ? AND latent = ?", [found[0], int(latent)]
        ).fetchone()
    if row is None:
        return None
    return LatentSummary(int(found[0]), int(latent), float(row[0]), float(row[1]), row[2] or "")


def features_by_label(atlas: AtlasSource, sae_name: str, text: str, limit: int = 100) -> list[LatentSummary]:
    """Up to ``limit`` live latents of one SAE whose automatic label has a word starting with each
    word of ``text`` (a prefix range scan of the indexed ``label_terms``), most frequent first; with
    no words in ``text``, the SAE's most frequent live latents. A number in ``text`` also matches
    that latent id, so "938" finds feature 938 whatever its label."""
    words = [word.lower() for word in text.split() if word.strip()]
    terms = [w for word in words for w in _label_words(word)]
    with _connected(atlas) as connection:
        found = connection.execute("SELECT sae FROM saes WHERE name = ?", [sae_name]).fetchone()
        if found is None:
            return []
        sae = int(found[0])
        matching = " INTERSECT ".join(
            "SELECT latent FROM label_terms WHERE sae = ? AND term >= ? AND term < ?" for _ in terms
        )
        params: list = [sae]
        where = "sae = ? AND density > 0"
        if terms:
            where += f" AND (latent IN ({matching})"
            params += [value for term in terms for value in (sae, term, term + _LAST_CHARACTER)]
            ids = [int(word) for word in words if word.isdigit()]
            where += " OR list_contains(?::INTEGER[], latent))" if len(ids) == len(words) else ")"
            params += [ids] if len(ids) == len(words) else []
        rows = connection.execute(
            f"SELECT latent, max_act, density, label FROM features WHERE {where} ORDER BY density DESC, latent LIMIT ?",
            [*params, int(limit)],
        ).fetchall()
    return [LatentSummary(sae, int(latent), float(m), float(d), label or "") for latent, m, d, label in rows]


_LAST_CHARACTER = "\U0010ffff"  # sorts after every string that starts with a given prefix


def _label_words(word: str) -> list[str]:
    """The ``label_terms`` words a typed word stands for (terms are runs of letters, digits and _)."""
    return re.findall(r"\w+", word)
