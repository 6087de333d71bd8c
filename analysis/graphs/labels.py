"""Automatic feature labels for graph nodes, read from an atlas by (transcoder name, latent).

The atlas numbers its SAEs by their order in the run, so names are mapped to those numbers
through ``meta.saes``; a transcoder the atlas does not know simply has no labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from analysis.atlas.schema import open_atlas, read_meta


def atlas_labels(atlas: str | Path, features: Iterable[tuple[str, int]]) -> dict[tuple[str, int], str]:
    """The non-empty label of each (transcoder name, latent) the atlas has."""
    wanted = sorted(set(features))
    if not wanted:
        return {}
    connection = open_atlas(atlas)
    try:
        index = {info["name"]: i for i, info in enumerate(read_meta(connection)["saes"])}
        rows = [(index[name], latent) for name, latent in wanted if name in index]
        if not rows:
            return {}
        found = connection.execute(
            "SELECT f.sae, f.latent, f.label FROM features f "
            "JOIN (SELECT unnest(?) AS sae, unnest(?) AS latent) w USING (sae, latent) WHERE f.label <> ''",
            [[sae for sae, _ in rows], [latent for _, latent in rows]],
        ).fetchall()
    finally:
        connection.close()
    name_of = {i: name for name, i in index.items()}
    return {(name_of[sae], latent): label for sae, latent, label in found}
