"""Read back the running state a (partial) atlas holds, for ``merge.py`` to combine.

A partial atlas stores every statistic exactly (counts, sums, histograms on power-of-two ranges,
top windows, keyed interval samples, the quality sums as JSON), so ``FeatureStats`` and
``QualitySums`` rebuilt from it combine with others as if they had never been written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import torch

from analysis.atlas.feature_stats import STORED_IN_FEATURES, FeatureStats, block_salt
from analysis.atlas.latent_range import latent_range
from analysis.atlas.reader import open_atlas, read_meta, sae_records, token_counts
from analysis.sae_metrics import QualitySums


def read_partial(path: Path) -> tuple[dict, list[dict], list[FeatureStats], list[QualitySums], np.ndarray]:
    """The run description, SAE rows, running statistics and token counts stored in an atlas."""
    connection = open_atlas(path)
    try:
        meta = read_meta(connection)
        sae_rows = sae_records(connection, quality_sums=True)
        counts = token_counts(connection)
        stats = [_read_stats(connection, row, meta) for row in sae_rows]
    finally:
        connection.close()
    quality = [_quality_from_json(json.loads(row["quality_sums"])) for row in sae_rows]
    return meta, sae_rows, stats, quality, counts


def latent_shard(meta: dict) -> tuple[int, int]:
    """Which latent range ``j/m`` of every SAE an atlas holds (0/1: every latent)."""
    index, count = meta.get("latent_shard", (0, 1))
    return int(index), int(count)


def read_token_l0(path: Path, n_saes: int) -> list[dict[int, np.ndarray]]:
    """A latent-range partial's per-token counts of firing latents: per SAE {window id: [context] int32}."""
    connection = open_atlas(path)
    try:
        rows = connection.execute("SELECT sae, window_id, l0 FROM token_l0 ORDER BY sae, window_id").fetchall()
    finally:
        connection.close()
    found: list[dict[int, np.ndarray]] = [{} for _ in range(n_saes)]
    for sae, window, counts in rows:
        found[sae][window] = np.asarray(counts, dtype=np.int32)
    return found


def _quality_from_json(data: dict) -> QualitySums:
    tensor = {"target_sum": torch.float64, "fired": torch.long}
    values: dict[str, Any] = {
        k: (torch.tensor(v, dtype=tensor[k]) if k in tensor and v is not None else v) for k, v in data.items()
    }
    return QualitySums(**values)


def _read_stats(connection: duckdb.DuckDBPyConnection, row: dict, meta: dict) -> FeatureStats:
    sae, context = row["sae"], meta["context"]
    first, end = latent_range(row["d_sae"], latent_shard(meta))
    stats = FeatureStats.empty(end - first, meta["top_k"], context, salt=block_salt(meta["seed"] * 1000 + sae, first))
    f = _arrays(
        connection.execute(f"SELECT {', '.join(STORED_IN_FEATURES)} FROM features WHERE sae = ? ORDER BY latent", [sae])
    )
    for name in STORED_IN_FEATURES:  # each in the dtype FeatureStats keeps it in
        values = np.stack(list(f[name])) if f[name].dtype == object else f[name]
        setattr(stats, name, torch.from_numpy(values).to(getattr(stats, name).dtype))
    stats.l0_counts[: len(row["l0_counts"])] = torch.tensor(row["l0_counts"])
    e = _arrays(
        connection.execute(
            "SELECT latent, kind, interval_index, rank, window_id, position, value, sample_key, act_positions, "
            "coalesce(act_values, []) AS act_values, coalesce(act_values_f16, []) AS act_values_f16 "
            "FROM examples WHERE sae = ?",
            [sae],
        )
    )
    acts = np.zeros((len(e["kind"]), context), dtype=np.float32)
    lengths = np.array([len(p) for p in e["act_positions"]], dtype=np.int64)
    if lengths.sum():
        rows = np.repeat(np.arange(len(lengths)), lengths)
        from_top = np.repeat(e["kind"] == "top", lengths)
        values = np.empty(len(rows), dtype=np.float32)
        values[from_top] = np.concatenate(e["act_values"])
        values[~from_top] = np.concatenate(e["act_values_f16"]).astype(np.int16).view(np.float16)
        acts[rows, np.concatenate(e["act_positions"]).astype(np.int64)] = values
    latent, rank = torch.from_numpy(e["latent"].astype(np.int64)), torch.from_numpy(e["rank"].astype(np.int64))
    top = torch.from_numpy(e["kind"] == "top")
    window, position = torch.from_numpy(e["window_id"]), torch.from_numpy(e["position"].astype(np.int64))
    value, acts_t = torch.from_numpy(e["value"]), torch.from_numpy(acts)
    stats.top_value[latent[top], rank[top]] = value[top]
    stats.top_window[latent[top], rank[top]] = window[top]
    stats.top_position[latent[top], rank[top]] = position[top]
    stats.top_acts[latent[top], rank[top]] = acts_t[top]
    sample = ~top
    index = (latent[sample], torch.from_numpy(e["interval_index"].astype(np.int64))[sample], rank[sample])
    stats.sample_key[index] = torch.from_numpy(e["sample_key"])[sample]
    stats.sample_token[index] = window[sample] * context + position[sample]
    stats.sample_value[index] = value[sample]
    stats.sample_acts[index] = acts_t[sample].half()
    return stats


def _arrays(result: duckdb.DuckDBPyConnection) -> dict[str, np.ndarray]:
    """A query's columns as plain numpy arrays (lists as object arrays)."""
    return {name: np.asarray(column) for name, column in result.fetchnumpy().items()}
