"""Write an atlas: the tables that ``contract.py`` declares, filled from one run's statistics.

An atlas is written to ``PATH.tmp`` and renamed onto ``PATH`` only when complete, so a reader sees
either the old file or the new one, never half of one. Columns are built as Arrow arrays straight
from the tensors (no Python loop over latents or examples) and loaded by DuckDB in one statement
per table into the tables created from the contract's declarations, which fix every column's
type (DuckDB casts on insert; nothing is typed by its values).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analysis.atlas import contract
from analysis.atlas.contract import DENSITY_BINS, SCHEMA_VERSION
from analysis.atlas.corpus_source import CorpusTokens
from analysis.atlas.feature_stats import EMPTY_KEY, STORED_IN_FEATURES, FeatureStats
from analysis.atlas.labels import automatic_labels, enriched_tokens
from analysis.atlas.weight_stats import LogitEffects, Neighbours
from analysis.errors import SAEscopeError
from analysis.sae_metrics import DENSE_FRACTION, QualitySums


@dataclass
class SAEResult:
    """Everything the atlas stores about one SAE."""

    info: dict  # name, spec, hook_name, hook_name_out, architecture, is_transcoder, d_in, d_sae, content_hash
    stats: FeatureStats
    quality: QualitySums
    logits: LogitEffects | None
    neighbours: dict[str, Neighbours]


@dataclass
class AtlasContent:
    meta: dict
    corpus: CorpusTokens
    bos_id: int | None
    token_text: list[str]
    token_counts: np.ndarray
    saes: list[SAEResult]
    # a latent-range shard's (window ids, per SAE [windows, context] int32 counts): contract.TOKEN_L0
    token_l0: tuple[np.ndarray, list[np.ndarray]] | None = None


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
    top = examples.filter(pc.equal(examples["kind"], "top"))  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute defines it at import time
    context = result.stats.context
    lengths = pc.list_value_length(top["act_positions"]).to_numpy()  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute defines it at import time
    latents = np.repeat(top["latent"].to_numpy(), lengths)
    windows = np.repeat(top["window_id"].to_numpy(), lengths)
    positions = pc.list_flatten(top["act_positions"]).to_numpy().astype(np.int64)  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute defines it at import time
    values = pc.list_flatten(top["act_values"]).to_numpy().astype(np.float64)  # pyright: ignore[reportAttributeAccessIssue]  # pyarrow.compute defines it at import time
    unique_windows, inverse = np.unique(windows, return_inverse=True)
    window_tokens = content.corpus.windows(unique_windows, context, content.bos_id or 0).numpy()
    tokens = window_tokens[inverse, positions] if len(inverse) else np.zeros(0, dtype=np.int64)
    firing = enriched_tokens(latents, tokens, values, content.token_counts, result.stats.d_sae)
    promoted = result.logits.top_tokens if result.logits is not None else None
    return automatic_labels(firing, promoted, content.token_text), firing


def _feature_table(sae: int, result: SAEResult, tokens: int, labels: tuple[list[str], list[list[int]]]) -> pa.Table:
    stats, d = result.stats, result.stats.d_sae
    count = stats.fire_count.numpy()
    stored = {name: getattr(stats, name).numpy() for name in STORED_IN_FEATURES}
    columns = {
        "sae": pa.array(np.full(d, sae, dtype=np.int32)),
        "latent": pa.array(np.arange(d, dtype=np.int32)),
        **{name: _fixed(values) if values.ndim == 2 else pa.array(values) for name, values in stored.items()},
        "density": pa.array(count / max(tokens, 1)),
        "mean_act": pa.array(np.where(count > 0, stats.act_sum.numpy() / np.maximum(count, 1), 0.0)),
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


def _neighbour_tables(sae: int, result: SAEResult) -> list[pa.Table]:
    """One SAE's nearest latents by scope, in the columns ``contract.NEIGHBOUR_INPUT`` names."""
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
    return parts


class AtlasWriteError(SAEscopeError, ValueError):
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
    """Every table of the contract, created from its declaration and filled in its primary order."""
    context = content.meta["context"]
    no_logits = contract.FEATURES.optional_columns() if all(r.logits is None for r in content.saes) else frozenset()
    for table in contract.TABLES:
        connection.execute(table.create(context, leave_out=no_logits))
    meta = content.meta | {"schema_version": SCHEMA_VERSION}
    connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
    example_tables, feature_tables, neighbour_tables, sae_rows = [], [], [], []
    for sae, result in enumerate(content.saes):
        examples = _example_table(sae, result.stats, content.corpus)
        example_tables.append(examples)
        feature_tables.append(
            _feature_table(sae, result, int(result.stats.l0_counts.sum()), _labels(result, examples, content))
        )
        neighbour_tables += _neighbour_tables(sae, result)
        sae_rows.append(_sae_row(sae, result))
    saes = pa.Table.from_pylist(sae_rows)
    features = pa.concat_tables(feature_tables, promote_options="default")
    examples = pa.concat_tables(example_tables)
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
    for declared, rows in (
        (contract.SAES, saes),
        (contract.FEATURES, features),
        (contract.EXAMPLES, examples),
        (contract.WINDOWS, windows),
        (contract.DOCUMENTS, documents),
        (contract.TOKENS, tokens),
    ):
        _insert(connection, declared, rows)
    if content.token_l0 is not None:
        connection.execute(contract.TOKEN_L0.create(context))
        window_ids, counts = content.token_l0
        for sae, per_token in enumerate(counts):
            rows = pa.table(
                {
                    "sae": pa.array(np.full(len(window_ids), sae, dtype=np.int32)),
                    "window_id": pa.array(window_ids.astype(np.int64)),
                    "l0": _fixed(per_token.astype(np.int32)),
                }
            )
            _insert(connection, contract.TOKEN_L0, rows)
    if neighbour_tables:
        connection.register("incoming", pa.concat_tables(neighbour_tables))
        connection.execute(contract.fill_neighbours("incoming"))
        connection.unregister("incoming")
    for statement in contract.FINISH:
        connection.execute(statement)


def _insert(connection: duckdb.DuckDBPyConnection, declared: contract.Table, rows: pa.Table) -> None:
    """``rows`` into the declared table in its primary order, matched by column name."""
    connection.register("incoming", rows)
    connection.execute(f"INSERT INTO {declared.name} BY NAME SELECT * FROM incoming ORDER BY {declared.order}")
    connection.unregister("incoming")
