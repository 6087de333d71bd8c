"""Write an atlas (and read back the running state a partial atlas holds, for merging).

An atlas is written to ``PATH.tmp`` and renamed onto ``PATH`` only when complete, so a reader sees
either the old file or the new one, never half of one. Columns are built as Arrow arrays straight
from the tensors (no Python loop over latents or examples) and loaded by DuckDB in one statement
per table.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch

from analysis.atlas.corpus_source import CorpusTokens
from analysis.atlas.feature_stats import EMPTY_KEY, FeatureStats
from analysis.atlas.labels import TEMPLATE_PATTERN, automatic_labels, enriched_tokens
from analysis.atlas.schema import SCHEMA_VERSION, open_atlas, read_meta
from analysis.atlas.weight_stats import LogitEffects
from analysis.sae_metrics import DENSE_FRACTION, QualitySums

DENSITY_BINS = np.linspace(-8, 0, 49)  # log10 density edges for the per-SAE histogram across latents
# Declared, not inferred from the values: a run with no transcoder (hook_name_out all NULL) or no
# quality sample must still give every column its type.
SAES_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("spec", pa.string()),
        ("hook_name", pa.string()),
        ("hook_name_out", pa.string()),
        ("architecture", pa.string()),
        ("is_transcoder", pa.bool_()),
        ("d_in", pa.int32()),
        ("d_sae", pa.int32()),
        ("content_hash", pa.string()),
        ("sae", pa.int32()),
        ("tokens", pa.int64()),
        ("mean_l0", pa.float64()),
        ("l0_counts", pa.list_(pa.int64())),
        ("explained_variance", pa.float64()),
        ("ce_loss_clean", pa.float64()),
        ("ce_loss_with_sae", pa.float64()),
        ("ce_loss_zero_ablation", pa.float64()),
        ("ce_loss_recovered", pa.float64()),
        ("quality_tokens", pa.int64()),
        ("ce_tokens", pa.int64()),
        ("quality_sums", pa.string()),
        ("dead", pa.int64()),
        ("dense", pa.int64()),
        ("density_log10_edges", pa.list_(pa.float64())),
        ("density_counts", pa.list_(pa.int64())),
    ]
)


@dataclass
class SAEResult:
    """Everything the atlas stores about one SAE."""

    info: dict  # name, spec, hook_name, hook_name_out, architecture, is_transcoder, d_in, d_sae, content_hash
    stats: FeatureStats
    quality: QualitySums
    logits: LogitEffects | None
    neighbours: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class AtlasContent:
    meta: dict
    corpus: CorpusTokens
    bos_id: int | None
    token_text: list[str]
    token_counts: np.ndarray
    saes: list[SAEResult]


def _fixed(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(matrix).reshape(-1)), matrix.shape[1])


def _ragged(row: np.ndarray, values: np.ndarray, n_rows: int) -> pa.ListArray:
    """List column from the row index of each value (values already grouped by row, in order)."""
    offsets = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_rows))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _sparse_windows(acts: np.ndarray) -> tuple[pa.ListArray, pa.ListArray]:
    """Each [context] activation row as (positions, values) of its non-zero entries; values keep
    ``acts``' dtype (float32 for top windows, float16 stored as its int16 bits for samples)."""
    row, position = np.nonzero(acts)
    values = acts[row, position]
    if values.dtype == np.float16:
        values = values.view(np.int16)
    return _ragged(row, position.astype(np.int16), len(acts)), _ragged(row, values, len(acts))


def _examples(
    sae: int,
    kind: str,
    latent: np.ndarray,
    interval: np.ndarray,
    rank: np.ndarray,
    window: np.ndarray,
    position: np.ndarray,
    value: np.ndarray,
    key: np.ndarray,
    acts: np.ndarray,
    corpus: CorpusTokens,
) -> pa.Table:
    n, context = acts.shape
    positions, values = _sparse_windows(acts)
    float_values, half_values = (
        (values, pa.nulls(n, pa.list_(pa.int16()))) if kind == "top" else (pa.nulls(n, pa.list_(pa.float32())), values)
    )
    return pa.table(
        {
            "sae": pa.array(np.full(n, sae, dtype=np.int32)),
            "latent": pa.array(latent.astype(np.int32)),
            "kind": pa.array(np.full(n, kind)),
            "interval_index": pa.array(interval.astype(np.int16)),
            "rank": pa.array(rank.astype(np.int16)),
            "window_id": pa.array(window.astype(np.int64)),
            "position": pa.array(position.astype(np.int16)),
            "value": pa.array(value.astype(np.float32)),
            "sample_key": pa.array(key.astype(np.int64)),
            "document": pa.array(corpus.document_of(window, position, context).astype(np.int32)),
            "act_positions": positions,
            "act_values": float_values,
            "act_values_f16": half_values,
        }
    )


def _example_table(sae: int, stats: FeatureStats, corpus: CorpusTokens) -> pa.Table:
    """Top windows (activations as float32) and interval samples (as float16, their running precision:
    they are most of the rows, and half the bytes keeps a million-token demo atlas under 40 MB)."""
    stats.canonical()
    latent, slot = (stats.top_window >= 0).nonzero(as_tuple=True)
    top = _examples(
        sae,
        "top",
        latent.numpy(),
        np.full(len(latent), -1),
        slot.numpy(),
        stats.top_window[latent, slot].numpy(),
        stats.top_position[latent, slot].numpy(),
        stats.top_value[latent, slot].numpy(),
        np.full(len(latent), -1),
        stats.top_acts[latent, slot].numpy(),
        corpus,
    )
    latent, interval, slot = (stats.sample_key < EMPTY_KEY).nonzero(as_tuple=True)
    index = (latent, interval, slot)
    token = stats.sample_token[index].numpy()
    samples = _examples(
        sae,
        "interval",
        latent.numpy(),
        interval.numpy(),
        slot.numpy(),
        token // stats.context,
        token % stats.context,
        stats.sample_value[index].numpy(),
        stats.sample_key[index].numpy(),
        stats.sample_acts[index].numpy(),
        corpus,
    )
    return pa.concat_tables([top, samples])


def _labels(result: SAEResult, examples: pa.Table, content: AtlasContent) -> tuple[list[str], list[list[int]]]:
    """Automatic labels from the top examples' firing tokens and the promoted tokens, and those
    firing tokens (the ``top_tokens`` column, which the dashboard's token filter searches)."""
    top = examples.filter(pa.compute.equal(examples["kind"], "top"))
    context = result.stats.context
    lengths = pa.compute.list_value_length(top["act_positions"]).to_numpy()
    latents = np.repeat(top["latent"].to_numpy(), lengths)
    windows = np.repeat(top["window_id"].to_numpy(), lengths)
    positions = pa.compute.list_flatten(top["act_positions"]).to_numpy().astype(np.int64)
    values = pa.compute.list_flatten(top["act_values"]).to_numpy().astype(np.float64)
    unique_windows, inverse = np.unique(windows, return_inverse=True)
    window_tokens = content.corpus.windows(unique_windows, context, content.bos_id or 0).numpy()
    tokens = window_tokens[inverse, positions] if len(inverse) else np.zeros(0, dtype=np.int64)
    firing = enriched_tokens(latents, tokens, values, content.token_counts, result.stats.d_sae)
    promoted = result.logits.top_tokens if result.logits is not None else None
    return automatic_labels(firing, promoted, content.token_text), firing


def _feature_table(sae: int, result: SAEResult, tokens: int, labels: tuple[list[str], list[list[int]]]) -> pa.Table:
    stats, d = result.stats, result.stats.d_sae
    count = stats.fire_count.numpy()
    columns = {
        "sae": pa.array(np.full(d, sae, dtype=np.int32)),
        "latent": pa.array(np.arange(d, dtype=np.int32)),
        "fire_count": pa.array(count),
        "density": pa.array(count / max(tokens, 1)),
        "max_act": pa.array(stats.max_act.numpy()),
        "mean_act": pa.array(np.where(count > 0, stats.act_sum.numpy() / np.maximum(count, 1), 0.0)),
        "act_sum": pa.array(stats.act_sum.numpy()),
        "range_exp": pa.array(stats.range_exp.numpy()),
        "hist": _fixed(stats.hist.numpy()),
        "log_hist": _fixed(stats.log_hist.numpy()),
        "interval_count": _fixed(stats.interval_count.numpy()),
        "label": pa.array(labels[0]),
        "label_source": pa.array(np.full(d, "auto")),
        "top_tokens": pa.array(labels[1], type=pa.list_(pa.int32())),
    }
    if result.logits is not None:
        logits = result.logits
        columns |= {
            "top_logit_tokens": _fixed(logits.top_tokens.astype(np.int32)),
            "top_logit_values": _fixed(logits.top_values.astype(np.float32)),
            "bottom_logit_tokens": _fixed(logits.bottom_tokens.astype(np.int32)),
            "bottom_logit_values": _fixed(logits.bottom_values.astype(np.float32)),
            "logit_hist_min": pa.array(logits.hist_min.astype(np.float32)),
            "logit_hist_max": pa.array(logits.hist_max.astype(np.float32)),
            "logit_hist": _fixed(logits.hist_counts.astype(np.int32)),
        }
    return pa.table(columns)


def _sae_row(sae: int, result: SAEResult) -> dict:
    quality, stats = result.quality, result.stats
    tokens = int(stats.l0_counts.sum())
    count = stats.fire_count.numpy()
    density = count[count > 0] / max(tokens, 1)
    density_counts, _ = np.histogram(np.log10(density), bins=DENSITY_BINS)
    l0 = stats.l0_counts.numpy()
    measured = quality.tokens > 0
    ce = quality.result(result.info["name"]) if quality.ce_predictions else None
    return result.info | {
        "sae": sae,
        "tokens": tokens,
        "mean_l0": float((l0 * np.arange(len(l0))).sum() / max(tokens, 1)),
        "l0_counts": l0[: int(np.nonzero(l0)[0].max()) + 1 if l0.any() else 1].tolist(),
        "explained_variance": quality.explained_variance() if measured else None,
        "ce_loss_clean": ce.ce_loss_clean if ce else None,
        "ce_loss_with_sae": ce.ce_loss_with_sae if ce else None,
        "ce_loss_zero_ablation": ce.ce_loss_zero_ablation if ce else None,
        "ce_loss_recovered": ce.ce_loss_recovered if ce else None,
        "quality_tokens": quality.tokens,
        "ce_tokens": quality.ce_tokens,
        "quality_sums": json.dumps(_quality_to_json(quality)),
        "dead": int((count == 0).sum()),
        "dense": int((count > DENSE_FRACTION * tokens).sum()),
        "density_log10_edges": DENSITY_BINS.tolist(),
        "density_counts": density_counts.tolist(),
    }


def _quality_to_json(quality: QualitySums) -> dict:
    return {
        "d_sae": quality.d_sae,
        "tokens": quality.tokens,
        "l0_sum": quality.l0_sum,
        "residual_sq": quality.residual_sq,
        "target_sum": None if quality.target_sum is None else quality.target_sum.tolist(),
        "target_sq_sum": quality.target_sq_sum,
        "ce_sums": quality.ce_sums,
        "ce_predictions": quality.ce_predictions,
        "ce_tokens": quality.ce_tokens,
        "fired": None if quality.fired is None else quality.fired.tolist(),
    }


def _quality_from_json(data: dict) -> QualitySums:
    tensor = {"target_sum": torch.float64, "fired": torch.long}
    return QualitySums(
        **{k: (torch.tensor(v, dtype=tensor[k]) if k in tensor and v is not None else v) for k, v in data.items()}
    )


def _neighbour_table(sae: int, result: SAEResult) -> pa.Table:
    parts = []
    for scope, (other_sae, other_latent, cosine) in result.neighbours.items():
        d, k = other_sae.shape
        parts.append(
            pa.table(
                {
                    "sae": pa.array(np.full(d * k, sae, dtype=np.int32)),
                    "latent": pa.array(np.repeat(np.arange(d, dtype=np.int32), k)),
                    "scope": pa.array(np.full(d * k, scope)),
                    "rank": pa.array(np.tile(np.arange(k, dtype=np.int16), d)),
                    "other_sae": pa.array(other_sae.reshape(-1).astype(np.int32)),
                    "other_latent": pa.array(other_latent.reshape(-1).astype(np.int32)),
                    "cosine": pa.array(cosine.reshape(-1).astype(np.float32)),
                }
            )
        )
    return pa.concat_tables(parts) if parts else None


class AtlasWriteError(ValueError):
    """The atlas could not be written (disk full, no permission); nothing was left at its path."""


def write_atlas(path: Path, content: AtlasContent) -> None:
    """Write the whole atlas to ``path`` atomically: a reader sees the old file or the whole new one.

    It is built in a temporary file renamed over ``path`` at the end; on failure (a full disk
    above all) the temporary file is removed and ``path`` is left as it was.
    """
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    try:
        connection = duckdb.connect(str(temporary))
        try:
            _write_tables(connection, content)
            connection.execute("CHECKPOINT")
        finally:
            connection.close()
        os.replace(temporary, path)
    except (OSError, duckdb.Error) as error:
        temporary.unlink(missing_ok=True)
        path.with_name(temporary.name + ".wal").unlink(missing_ok=True)
        raise AtlasWriteError(f"could not write the atlas {path}: {error}") from error


def _write_tables(connection: duckdb.DuckDBPyConnection, content: AtlasContent) -> None:
    meta = content.meta | {"schema_version": SCHEMA_VERSION}
    connection.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    context = content.meta["context"]
    example_tables, feature_tables, neighbour_tables, sae_rows = [], [], [], []
    for sae, result in enumerate(content.saes):
        examples = _example_table(sae, result.stats, content.corpus)
        example_tables.append(examples)
        feature_tables.append(
            _feature_table(sae, result, int(result.stats.l0_counts.sum()), _labels(result, examples, content))
        )
        neighbour_tables.append(_neighbour_table(sae, result))
        sae_rows.append(_sae_row(sae, result))
    saes = pa.Table.from_pylist(sae_rows, schema=SAES_SCHEMA)
    features = pa.concat_tables(feature_tables, promote_options="default")
    examples = pa.concat_tables(example_tables)
    neighbours = (
        pa.concat_tables([t for t in neighbour_tables if t is not None])
        if any(t is not None for t in neighbour_tables)
        else NO_NEIGHBOURS
    )
    used = np.unique(examples["window_id"].to_numpy())
    windows = pa.table(
        {
            "window_id": pa.array(used),
            "tokens": _fixed(
                content.corpus.windows(used, context, content.bos_id or 0).numpy().astype(np.int32)
                if len(used)
                else np.zeros((0, context), dtype=np.int32)
            ),
        }
    )
    corpus = content.corpus
    documents = pa.table(
        {
            "document": pa.array(np.arange(len(corpus.doc_ids), dtype=np.int32)),
            "doc_id": pa.array(corpus.doc_ids),
            "domain": pa.array(corpus.doc_domains),
            "source": pa.array(corpus.doc_sources),
            "start_token": pa.array(corpus.doc_starts),
        }
    )
    tokens = pa.table(
        {
            "token": pa.array(np.arange(len(content.token_text), dtype=np.int32)),
            "text": pa.array(content.token_text),
            "corpus_count": pa.array(content.token_counts),
        }
    )
    for name, table, order in (
        ("saes", saes, "sae"),
        ("features", features, "sae, latent"),
        ("examples", examples, "sae, latent, kind DESC, interval_index, rank"),
        ("windows", windows, "window_id"),
        ("documents", documents, "document"),
        ("tokens", tokens, "token"),
    ):
        connection.register("incoming", table)
        connection.execute(f"CREATE TABLE {name} AS SELECT * FROM incoming ORDER BY {order}")
        connection.unregister("incoming")
    connection.register("incoming", neighbours)
    write_neighbours(connection, "incoming")
    connection.unregister("incoming")
    for statement in (*SQL_MACROS, *DERIVED_TABLES):
        connection.execute(statement)


def write_neighbours(connection: duckdb.DuckDBPyConnection, source: str) -> None:
    """The neighbours table from ``source`` (sae, latent, scope, rank, other_sae, other_latent,
    cosine) once ``features`` exists: each row gets the other latent's automatic label, so a
    feature page lists its neighbours from one range of rows instead of a join over every feature."""
    connection.execute(
        "CREATE TABLE neighbours AS SELECT g.sae, g.latent, g.scope, g.rank, g.other_sae, g.other_latent, g.cosine, "
        f"coalesce(f.label, '') AS other_label FROM {source} g LEFT JOIN features f "
        "ON f.sae = g.other_sae AND f.latent = g.other_latent ORDER BY g.sae, g.latent, g.scope DESC, g.rank"
    )


NO_NEIGHBOURS = pa.table(
    {
        "sae": pa.array([], pa.int32()),
        "latent": pa.array([], pa.int32()),
        "scope": pa.array([], pa.string()),
        "rank": pa.array([], pa.int16()),
        "other_sae": pa.array([], pa.int32()),
        "other_latent": pa.array([], pa.int32()),
        "cosine": pa.array([], pa.float32()),
    }
)

DERIVED_TABLES = (
    # every lower-cased word of each automatic label (not the words the template adds), sorted, so a
    # word-prefix search is a range scan
    "CREATE TABLE label_terms AS SELECT DISTINCT lower(unnest(regexp_extract_all(regexp_replace(label, "
    f"'{TEMPLATE_PATTERN}', ' ', 'g'), '[[:alnum:]_]+'))) AS term, sae, latent FROM features "
    "ORDER BY term, sae, latent",
    # point lookups of the windows and documents a feature page shows (a range scan cannot: they are scattered)
    "CREATE UNIQUE INDEX windows_by_id ON windows (window_id)",
    "CREATE UNIQUE INDEX documents_by_id ON documents (document)",
)

SQL_MACROS = (
    # float16 bits (SMALLINT) to a number, for interval samples' activations
    "CREATE MACRO half_to_float(h) AS (CASE WHEN h < 0 THEN -1 ELSE 1 END) * (CASE WHEN (h & 32767) >> 10 = 0 "
    "THEN (h & 1023)::DOUBLE * 2 ** -24 ELSE ((h & 1023) + 1024)::DOUBLE * 2 ** (((h & 32767) >> 10) - 25) END)",
    # an example's per-token activations whatever its kind: SELECT example_acts(act_values, act_values_f16) ...
    "CREATE MACRO example_acts(values32, values16) AS "
    "coalesce(values32, list_transform(values16, lambda h: half_to_float(h)::FLOAT))",
)


def read_partial(path: Path) -> tuple[dict, list[dict], list[FeatureStats], list[QualitySums], np.ndarray]:
    """The run description, SAE rows, running statistics and token counts stored in an atlas."""
    connection = open_atlas(path)
    try:
        meta = read_meta(connection)
        cursor = connection.execute("SELECT * FROM saes ORDER BY sae")
        columns = [c[0] for c in cursor.description or []]  # not via pandas: it reads a NULL string as NaN
        sae_rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
        token_counts = connection.execute("SELECT corpus_count FROM tokens ORDER BY token").fetchnumpy()["corpus_count"]
        stats = [_read_stats(connection, row, meta) for row in sae_rows]
    finally:
        connection.close()
    quality = [_quality_from_json(json.loads(row["quality_sums"])) for row in sae_rows]
    return meta, sae_rows, stats, quality, token_counts


def _read_stats(connection: duckdb.DuckDBPyConnection, row: dict, meta: dict) -> FeatureStats:
    sae, d, context = row["sae"], row["d_sae"], meta["context"]
    stats = FeatureStats.empty(d, meta["top_k"], context, salt=meta["seed"] * 1000 + sae)
    f = connection.execute(
        "SELECT fire_count, act_sum, max_act, range_exp, hist, log_hist, interval_count FROM features "
        "WHERE sae = ? ORDER BY latent",
        [sae],
    ).fetchnumpy()
    stats.fire_count = torch.from_numpy(f["fire_count"].astype(np.int64))
    stats.act_sum = torch.from_numpy(f["act_sum"].astype(np.float64))
    stats.max_act = torch.from_numpy(f["max_act"].astype(np.float32))
    stats.range_exp = torch.from_numpy(f["range_exp"].astype(np.int32))
    for name in ("hist", "log_hist", "interval_count"):
        setattr(stats, name, torch.from_numpy(np.stack(f[name]).astype(np.int64)))
    stats.l0_counts[: len(row["l0_counts"])] = torch.tensor(row["l0_counts"])
    e = connection.execute(
        "SELECT latent, kind, interval_index, rank, window_id, position, value, sample_key, act_positions, "
        "coalesce(act_values, []) AS act_values, coalesce(act_values_f16, []) AS act_values_f16 "
        "FROM examples WHERE sae = ?",
        [sae],
    ).fetchnumpy()
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
