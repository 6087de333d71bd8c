"""The atlas columns the live pages need beside the model's output (densities for the density
filter, automatic labels of the hits), read through the workspace's attached atlas with the
shared lookups of ``analysis/atlas/sae_lookup.py``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb
import numpy as np

from analysis.atlas import sae_lookup
from dashboard.shell.workspace import Atlas, Workspace

_densities: dict[tuple[str, float, str], np.ndarray] = {}  # (atlas alias, modified, sae) -> density by latent


def _atlas_cursor(workspace: Workspace, atlas: Atlas) -> duckdb.DuckDBPyConnection:
    """A cursor whose unqualified table names are the atlas's (``USE`` acts on this cursor only)."""
    cursor = workspace.cursor()
    cursor.execute(f"USE {atlas.alias}")
    return cursor


def atlas_densities(workspace: Workspace, atlas: Atlas, sae_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Each named SAE's density array indexed by latent, read once per atlas file and SAE."""
    missing = [name for name in sae_names if (atlas.alias, atlas.modified, name) not in _densities]
    if missing:
        for name, values in sae_lookup.atlas_densities(_atlas_cursor(workspace, atlas), missing).items():
            _densities[(atlas.alias, atlas.modified, name)] = values
    return {name: _densities[key] for name in sae_names if (key := (atlas.alias, atlas.modified, name)) in _densities}


def atlas_labels(workspace: Workspace, atlas: Atlas, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The automatic labels of (SAE name, latent) pairs the atlas has."""
    return sae_lookup.atlas_labels(_atlas_cursor(workspace, atlas), keys)
