"""Atlas columns looked up by SAE name, for live work: a loaded model knows its SAEs by name, an
atlas by its index in the run (``saes.sae``), so the name is the join key.

Torch-free, like ``schema.py``, so the dashboard can read these without loading a model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np

from analysis.atlas.schema import open_atlas

Atlas = str | Path | duckdb.DuckDBPyConnection


@contextmanager
def _connected(atlas: Atlas) -> Iterator[duckdb.DuckDBPyConnection]:
    """``atlas`` itself when it is a connection (left open), else the file opened read-only and closed after."""
    if isinstance(atlas, duckdb.DuckDBPyConnection):
        yield atlas
        return
    connection = open_atlas(atlas)
    try:
        yield connection
    finally:
        connection.close()


def atlas_densities(atlas: Atlas, sae_names: Iterable[str]) -> dict[str, np.ndarray]:
    """Each named SAE's latent densities (float64, indexed by latent), for those the atlas has;
    names it lacks are left out, so the caller decides whether that matters."""
    names = list(dict.fromkeys(sae_names))
    with _connected(atlas) as connection:
        sizes = connection.execute("SELECT name, sae, d_sae FROM saes WHERE list_contains(?, name)", [names]).fetchall()
        densities = {}
        for name, sae, d_sae in sizes:
            columns = connection.execute(
                "SELECT latent, density FROM features WHERE sae = ? ORDER BY latent", [sae]
            ).fetchnumpy()
            values = np.full(int(d_sae), np.nan)
            values[columns["latent"]] = columns["density"]
            densities[name] = values
    return densities


def atlas_labels(atlas: Atlas, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The automatic label of each (SAE name, latent) the atlas has (empty for a latent it left
    unlabelled); keys it lacks are left out."""
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
