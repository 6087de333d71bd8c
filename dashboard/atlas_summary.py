"""The open atlas's run description and per-SAE numbers, for the home page (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.atlas.schema import open_atlas, read_meta
from dashboard.bundle import DEMO_BUNDLE

DEMO_ATLAS = DEMO_BUNDLE / "atlas.duckdb"


@dataclass
class AtlasSummary:
    path: Path
    meta: dict
    saes: pd.DataFrame  # one row per SAE: what the pass measured over the whole corpus

    @property
    def description(self) -> str:
        meta = self.meta
        return (f"{self.path.name}: {meta['tokens']:,} tokens of the {meta['corpus']['spec']} corpus in windows of "
                f"{meta['context']}, {int(self.saes['d_sae'].sum()):,} features, built {meta['finished'][:10]}")


def read_atlas_summary(path: Path = DEMO_ATLAS) -> AtlasSummary:
    """Read the run description and SAE table; raises ``AtlasError`` with a readable message."""
    connection = open_atlas(path)
    try:
        meta = read_meta(connection)
        saes = connection.execute(
            "SELECT name, hook_name AS reads, coalesce(hook_name_out, hook_name) AS writes, d_sae, mean_l0, "
            "explained_variance, ce_loss_recovered, dead, dense FROM saes ORDER BY sae").df()
    finally:
        connection.close()
    return AtlasSummary(path=Path(path), meta=meta, saes=saes)
