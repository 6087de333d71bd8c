"""``python -m analysis merge``: combine partial atlases (``precompute --shard i/n``) into one.

Each partial atlas stores its running statistics exactly (counts, sums, histograms on
power-of-two ranges, top windows, keyed interval samples), so merging is ``FeatureStats.combine``
over the partials, in any grouping and order, and equals the atlas of one pass over all windows.
Weight-derived tables (logit effects, neighbours) are identical in every partial and are taken
from the first; labels are recomputed from the merged examples.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from analysis.atlas import contract
from analysis.atlas.corpus_source import load_corpus
from analysis.atlas.partial import read_partial
from analysis.atlas.reader import open_atlas, read_meta
from analysis.atlas.store import AtlasContent, SAEResult, write_atlas
from analysis.atlas.weight_stats import LogitEffects
from analysis.errors import SAEscopeError

if TYPE_CHECKING:
    import pandas as pd

_RUN_KEYS = (
    "schema_version",
    "model",
    "saes",
    "corpus",
    "context",
    "top_k",
    "seed",
    "total_windows",
    "quality_stride",
)


class MergeError(SAEscopeError, ValueError):
    """Partial atlases that cannot be merged."""


def stored_weight_tables(
    connection: duckdb.DuckDBPyConnection, sae: int, d_sae: int
) -> tuple[LogitEffects | None, dict]:
    """Logit effects and neighbours of one SAE, as stored in a (partial) atlas."""
    columns = {
        row[0]
        for row in connection.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'features'"
        ).fetchall()
    }
    logits = None
    if "top_logit_tokens" in columns:
        f = connection.execute(
            "SELECT top_logit_tokens, top_logit_values, bottom_logit_tokens, bottom_logit_values, "
            "logit_hist_min, logit_hist_max, logit_hist FROM features WHERE sae = ? ORDER BY latent",
            [sae],
        ).fetchnumpy()
        logits = LogitEffects(*(_stacked(v) for v in f.values()))
    neighbours = {}
    for scope in ("same", "other"):
        n = connection.execute(
            "SELECT other_sae, other_latent, cosine FROM neighbours WHERE sae = ? AND scope = ? ORDER BY latent, rank",
            [sae, scope],
        ).fetchnumpy()
        if len(n["other_sae"]):
            neighbours[scope] = tuple(v.reshape(d_sae, -1) for v in n.values())
    return logits, neighbours


def _stacked(column: np.ndarray | pd.Categorical) -> np.ndarray:
    """A fetched column as one array: a list column comes back as an object array of per-row arrays."""
    assert isinstance(column, np.ndarray), "only ENUM columns come back as Categorical, and features has none"
    return np.stack(list(column)) if column.dtype == object else column


def _windows(span: tuple[int, int]) -> str:
    """A half-open window range as people count them: ``windows 8-15``."""
    return f"window {span[0]}" if span[1] - span[0] == 1 else f"windows {span[0]}-{span[1] - 1}"


def window_ranges(meta: dict) -> list[list[int]]:
    """The [first, end) window range of each shard in an atlas: recorded, or for an atlas written
    before ranges were recorded, derived from its shards as precompute slices them."""
    if "window_ranges" in meta:
        return meta["window_ranges"]
    total = meta["total_windows"]
    return [[index * total // count, (index + 1) * total // count] for index, count in meta["shards"]]


def check_coverage(metas: dict[Path, dict], allow_partial: bool = False) -> list[list[int]]:
    """Refuse partials of different runs or overlapping windows, and (unless ``allow_partial``) a set
    that leaves windows out; return the missing window ranges. Checked from the files' meta alone."""
    (first, first_meta), *others = metas.items()
    for path, meta in others:
        differing = [k for k in _RUN_KEYS if meta.get(k) != first_meta.get(k)]
        if differing:
            raise MergeError(f"{path} and {first} come from different runs: they differ in {', '.join(differing)}")
    spans = sorted(
        ((span[0], span[1]), path) for path, meta in metas.items() for span in window_ranges(meta) if span[1] > span[0]
    )
    for (span, path), (next_span, next_path) in zip(spans, spans[1:]):
        if next_span[0] < span[1]:
            both = (next_span[0], min(span[1], next_span[1]))
            raise MergeError(
                f"{path} ({_windows(span)}) and {next_path} ({_windows(next_span)}) overlap in {_windows(both)}"
            )
    missing, reached = [], 0
    for (low, high), _ in spans:
        if low > reached:
            missing.append([reached, low])
        reached = max(reached, high)
    if reached < first_meta["total_windows"]:
        missing.append([reached, first_meta["total_windows"]])
    if missing and not allow_partial:
        held = "; ".join(f"{path}: {_windows(span)}" for span, path in spans)
        gaps = ", ".join(_windows((low, high)) for low, high in missing)
        raise MergeError(
            f"{gaps} of the run's {first_meta['total_windows']} are in none of the files ({held}); "
            "merge the missing shards too, or pass --allow-partial"
        )
    return missing


def merge_atlases(partials: list[Path], out: Path, overwrite: bool = False, allow_partial: bool = False) -> dict:
    """Merge ``partials`` into ``out``; refuses partials of different runs, overlapping windows, or
    (unless ``allow_partial``, which records the coverage in the atlas's meta) missing windows."""
    if not partials:
        raise MergeError("give at least one partial atlas")
    if len(set(partials)) != len(partials):
        raise MergeError(f"a file is given twice: {' '.join(str(p) for p in partials)}")
    if out.exists() and not overwrite:
        raise MergeError(f"{out} exists; pass --overwrite to replace it")
    started = time.monotonic()
    metas = {}
    for path in partials:
        connection = open_atlas(path)
        try:
            metas[path] = read_meta(connection)
        finally:
            connection.close()
    missing = check_coverage(metas, allow_partial)
    first_meta, sae_rows, stats, quality, token_counts = read_partial(partials[0])
    meta = dict(first_meta)
    for path in partials[1:]:
        other_meta, _, other_stats, other_quality, other_counts = read_partial(path)
        for mine, theirs in zip(stats, other_stats):
            mine.combine(theirs)
        quality = [a + b for a, b in zip(quality, other_quality)]
        token_counts = token_counts + other_counts
        for key in ("windows", "tokens", "pass_seconds"):
            meta[key] += other_meta[key]
        meta["started"] = min(meta["started"], other_meta["started"])
        meta["finished"] = max(meta["finished"], other_meta["finished"])
    runs = sorted(
        (span, shard, batches)
        for m in metas.values()
        for span, shard, batches in zip(window_ranges(m), m["shards"], m.get("batches", [[]] * len(m["shards"])))
    )
    meta["window_ranges"] = [span for span, _, _ in runs]
    meta["shards"] = [shard for _, shard, _ in runs]
    meta["batches"] = [batches for _, _, batches in runs]
    meta.pop("coverage", None)
    if missing:
        meta["coverage"] = {"windows": meta["windows"], "total_windows": meta["total_windows"], "missing": missing}
    corpus = _corpus_for(first_meta)
    connection = open_atlas(partials[0])
    try:
        results = []
        for row, sae_stats, sae_quality in zip(sae_rows, stats, quality):
            logits, neighbours = stored_weight_tables(connection, row["sae"], row["d_sae"])
            info = {k: row[k] for k in contract.SAE_INFO}
            results.append(SAEResult(info, sae_stats, sae_quality, logits, neighbours))
        token_text = [r[0] for r in connection.execute("SELECT text FROM tokens ORDER BY token").fetchall()]
        bos = connection.execute("SELECT tokens[1] FROM windows LIMIT 1").fetchone()
    finally:
        connection.close()
    write_atlas(
        out,
        AtlasContent(
            meta=meta,
            corpus=corpus,
            bos_id=bos[0] if bos else None,
            token_text=token_text,
            token_counts=token_counts,
            saes=results,
        ),
    )
    return {
        "atlas": str(out),
        "partials": len(partials),
        "shards": meta["shards"],
        "tokens": meta["tokens"],
        "missing": ", ".join(_windows((low, high)) for low, high in missing),
        "seconds": round(time.monotonic() - started, 1),
    }


def _corpus_for(meta: dict):
    """Re-read the run's corpus (for window tokens and documents) and check it is the same content."""
    from analysis.model_loading import load_tokenizer

    max_tokens = meta["total_windows"] * (meta["context"] - 1)
    corpus = load_corpus(meta["corpus"]["spec"], load_tokenizer(meta["model"]["spec"]), max_tokens=max_tokens)
    if corpus.content_hash != meta["corpus"]["content_hash"]:
        raise MergeError(f"corpus {meta['corpus']['spec']!r} has changed since the partial atlases were built")
    return corpus
