"""``python -m analysis merge``: combine partial atlases (``precompute --shard i/n``) into one.

Each partial atlas stores its running statistics exactly (counts, sums, histograms on
power-of-two ranges, top windows, keyed interval samples), so merging is ``FeatureStats.combine``
over the partials, in any grouping and order, and equals the atlas of one pass over all windows.
Partials of latent ranges (``--latent-shard j/m``) are combined over windows range by range, then
the ranges are concatenated (``FeatureStats.concat``), with the L0 histogram rebuilt from their
per-token counts. Weight-derived tables (logit effects, neighbours) are identical in every partial
of a latent range and are taken from the first; labels are recomputed from the merged examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import torch

from analysis.atlas import contract
from analysis.atlas.corpus_source import load_corpus
from analysis.atlas.feature_stats import FeatureStats
from analysis.atlas.latent_range import latent_range
from analysis.atlas.partial import latent_shard, read_partial, read_token_l0
from analysis.atlas.reader import open_atlas, read_meta
from analysis.atlas.store import AtlasContent, SAEResult, write_atlas
from analysis.atlas.weight_stats import LogitEffects
from analysis.errors import SAEscopeError
from analysis.sae_metrics import QualitySums

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


def _latents(shard: tuple[int, int]) -> str:
    return f"latent range {shard[0]}/{shard[1]}"


def check_coverage(metas: dict[Path, dict], allow_partial: bool = False) -> list[list[int]]:
    """Refuse partials of different runs, overlapping windows (of one latent range), latent ranges
    that are missing or hold other windows than the rest, and (unless ``allow_partial``) a set that
    leaves windows out; return the missing window ranges. Checked from the files' meta alone."""
    (first, first_meta), *others = metas.items()
    for path, meta in others:
        differing = [k for k in _RUN_KEYS if meta.get(k) != first_meta.get(k)]
        if differing:
            raise MergeError(f"{path} and {first} come from different runs: they differ in {', '.join(differing)}")
        if latent_shard(meta)[1] != latent_shard(first_meta)[1]:
            raise MergeError(
                f"{path} and {first} split the latents differently ({_latents(latent_shard(meta))} and "
                f"{_latents(latent_shard(first_meta))}): merge the latent ranges of one split"
            )
    ranges = latent_shard(first_meta)[1]
    groups = {j: {p: m for p, m in metas.items() if latent_shard(m)[0] == j} for j in range(ranges)}
    absent = [j for j, group in groups.items() if not group]
    if absent:
        raise MergeError(
            f"{', '.join(_latents((j, ranges)) for j in absent)} of every SAE in none of the files: "
            "merge the missing latent-range shards too"
        )
    missing = {j: _window_coverage(group, first_meta["total_windows"], allow_partial) for j, group in groups.items()}
    for j, gaps in missing.items():
        if gaps != missing[0]:
            held = ", ".join(_windows((low, high)) for low, high in gaps) or "none"
            raise MergeError(
                f"{_latents((j, ranges))} ({', '.join(map(str, groups[j]))}) and {_latents((0, ranges))} "
                f"({', '.join(map(str, groups[0]))}) lack different windows ({held} against "
                f"{', '.join(_windows((low, high)) for low, high in missing[0]) or 'none'}): every latent range "
                "must hold the same windows"
            )
    return missing[0]


def _window_coverage(metas: dict[Path, dict], total_windows: int, allow_partial: bool) -> list[list[int]]:
    """The windows missing from ``metas`` (partials of one latent range); refuses overlaps, and
    (unless ``allow_partial``) gaps."""
    shard = latent_shard(next(iter(metas.values())))
    where = f" of {_latents(shard)}" if shard[1] > 1 else ""
    spans = sorted(
        ((span[0], span[1]), path) for path, meta in metas.items() for span in window_ranges(meta) if span[1] > span[0]
    )
    for (span, path), (next_span, next_path) in zip(spans, spans[1:]):
        if next_span[0] < span[1]:
            both = (next_span[0], min(span[1], next_span[1]))
            raise MergeError(
                f"{path} ({_windows(span)}{where}) and {next_path} ({_windows(next_span)}{where}) overlap in "
                f"{_windows(both)}"
            )
    missing, reached = [], 0
    for (low, high), _ in spans:
        if low > reached:
            missing.append([reached, low])
        reached = max(reached, high)
    if reached < total_windows:
        missing.append([reached, total_windows])
    if missing and not allow_partial:
        held = "; ".join(f"{path}: {_windows(span)}" for span, path in spans)
        gaps = ", ".join(_windows((low, high)) for low, high in missing)
        raise MergeError(
            f"{gaps}{where} of the run's {total_windows} are in none of the files ({held}); "
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
    ranges = latent_shard(next(iter(metas.values())))[1]
    groups = [[p for p in partials if latent_shard(metas[p])[0] == j] for j in range(ranges)]
    combined = [_combine_windows(group) for group in groups]
    meta, sae_rows, stats = combined[0].meta, combined[0].sae_rows, combined[0].stats
    meta["pass_seconds"] = sum(c.meta["pass_seconds"] for c in combined)
    runs = sorted(
        (span, shard, batches)
        for m in (metas[p] for p in groups[0])
        for span, shard, batches in zip(window_ranges(m), m["shards"], m.get("batches", [[]] * len(m["shards"])))
    )
    meta["window_ranges"] = [span for span, _, _ in runs]
    meta["shards"] = [shard for _, shard, _ in runs]
    meta["batches"] = [batches for _, _, batches in runs]
    meta.pop("coverage", None)
    meta.pop("latent_shard", None)
    if missing:
        meta["coverage"] = {"windows": meta["windows"], "total_windows": meta["total_windows"], "missing": missing}
    if ranges > 1:
        stats = [
            FeatureStats.concat(
                [c.stats[sae] for c in combined],
                _l0_counts([c.token_l0[sae] for c in combined], row["d_sae"]),
                salt=meta["seed"] * 1000 + sae,
            )
            for sae, row in enumerate(sae_rows)
        ]
    corpus = _corpus_for(meta)
    weights = [_weight_tables(group[0], metas[group[0]], sae_rows) for group in groups]
    results = []
    # quality is measured by latent range 0 alone (it needs the whole SAE); every range counts the same tokens
    for sae, (row, sae_stats, sae_quality) in enumerate(zip(sae_rows, stats, combined[0].quality)):
        logits, neighbours = _concat_weights([w[sae] for w in weights])
        info = {k: row[k] for k in contract.SAE_INFO}
        results.append(SAEResult(info, sae_stats, sae_quality, logits, neighbours))
    connection = open_atlas(partials[0])
    try:
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
            token_counts=combined[0].token_counts,
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


@dataclass
class _Combined:
    """Partials of one latent range combined over their windows."""

    meta: dict
    sae_rows: list[dict]
    stats: list[FeatureStats]
    quality: list[QualitySums]
    token_counts: np.ndarray
    token_l0: list[dict[int, np.ndarray]]  # per SAE {window: per-token counts} (latent-range partials)


def _combine_windows(paths: list[Path]) -> _Combined:
    meta, sae_rows, stats, quality, token_counts = read_partial(paths[0])
    meta = dict(meta)
    token_l0 = read_token_l0(paths[0], len(sae_rows)) if latent_shard(meta)[1] > 1 else [{} for _ in sae_rows]
    for path in paths[1:]:
        other_meta, _, other_stats, other_quality, other_counts = read_partial(path)
        for mine, theirs in zip(stats, other_stats):
            mine.combine(theirs)
        quality = [a + b for a, b in zip(quality, other_quality)]
        token_counts = token_counts + other_counts
        for key in ("windows", "tokens", "pass_seconds"):
            meta[key] += other_meta[key]
        meta["started"] = min(meta["started"], other_meta["started"])
        meta["finished"] = max(meta["finished"], other_meta["finished"])
        if latent_shard(meta)[1] > 1:
            for mine, theirs in zip(token_l0, read_token_l0(path, len(sae_rows))):
                mine.update(theirs)
    return _Combined(meta, sae_rows, stats, quality, token_counts, token_l0)


def _l0_counts(ranges: list[dict[int, np.ndarray]], d_sae: int) -> torch.Tensor:
    """Tokens by number of firing latents of the whole SAE: each token's counts summed over the
    latent ranges (which hold the same windows; -1 marks a special token, left out)."""
    windows = sorted(ranges[0])
    if not windows:
        return torch.zeros(d_sae + 1, dtype=torch.long)
    per_range = np.stack([np.stack([counts[w] for w in windows]) for counts in ranges]).astype(np.int64)
    per_token, counted = per_range.sum(axis=0), per_range[0] >= 0
    return torch.from_numpy(np.bincount(per_token[counted], minlength=d_sae + 1))


def _weight_tables(path: Path, meta: dict, sae_rows: list[dict]) -> list[tuple[LogitEffects | None, dict]]:
    """Each SAE's stored logit effects and neighbours in ``path`` (its latent range's rows)."""
    ranges = [latent_range(row["d_sae"], latent_shard(meta)) for row in sae_rows]
    connection = open_atlas(path)
    try:
        return [
            stored_weight_tables(connection, row["sae"], end - first) for row, (first, end) in zip(sae_rows, ranges)
        ]
    finally:
        connection.close()


def _concat_weights(parts: list[tuple[LogitEffects | None, dict]]) -> tuple[LogitEffects | None, dict]:
    """One SAE's weight tables from those of its consecutive latent ranges."""
    if len(parts) == 1:
        return parts[0]
    logits = None
    if parts[0][0] is not None:
        logits = LogitEffects(
            *(np.concatenate([getattr(p[0], f.name) for p in parts]) for f in dataclass_fields(LogitEffects))
        )
    neighbours = {
        scope: tuple(np.concatenate([p[1][scope][i] for p in parts]) for i in range(3)) for scope in parts[0][1]
    }
    return logits, neighbours


def _corpus_for(meta: dict):
    """Re-read the run's corpus (for window tokens and documents) and check it is the same content."""
    from analysis.model_loading import load_tokenizer

    max_tokens = meta["total_windows"] * (meta["context"] - 1)
    corpus = load_corpus(meta["corpus"]["spec"], load_tokenizer(meta["model"]["spec"]), max_tokens=max_tokens)
    if corpus.content_hash != meta["corpus"]["content_hash"]:
        raise MergeError(f"corpus {meta['corpus']['spec']!r} has changed since the partial atlases were built")
    return corpus
