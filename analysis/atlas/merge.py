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

import duckdb
import numpy as np

from analysis.atlas.corpus_source import load_corpus
from analysis.atlas.partial import read_partial
from analysis.atlas.reader import open_atlas
from analysis.atlas.store import AtlasContent, SAEResult, write_atlas
from analysis.atlas.weight_stats import LogitEffects
from analysis.errors import SAEscopeError

_RUN_KEYS = ("model", "saes", "corpus", "context", "top_k", "seed", "total_windows", "quality_stride")


class MergeError(SAEscopeError, ValueError):
    """Partial atlases that cannot be merged."""


def _weight_tables(connection: duckdb.DuckDBPyConnection, sae: int, d_sae: int) -> tuple[LogitEffects | None, dict]:
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
        logits = LogitEffects(*(np.stack(v) if v.dtype == object else v for v in f.values()))
    neighbours = {}
    for scope in ("same", "other"):
        n = connection.execute(
            "SELECT other_sae, other_latent, cosine FROM neighbours WHERE sae = ? AND scope = ? ORDER BY latent, rank",
            [sae, scope],
        ).fetchnumpy()
        if len(n["other_sae"]):
            neighbours[scope] = tuple(v.reshape(d_sae, -1) for v in n.values())
    return logits, neighbours


def merge_atlases(partials: list[Path], out: Path, overwrite: bool = False) -> dict:
    """Merge ``partials`` into ``out``; refuses partials of different runs or overlapping shards."""
    if not partials:
        raise MergeError("give at least one partial atlas")
    if out.exists() and not overwrite:
        raise MergeError(f"{out} exists; pass --overwrite to replace it")
    started = time.monotonic()
    first_meta, sae_rows, stats, quality, token_counts = read_partial(partials[0])
    shards = list(first_meta["shards"])
    meta = dict(first_meta)
    for path in partials[1:]:
        other_meta, _, other_stats, other_quality, other_counts = read_partial(path)
        differing = [k for k in _RUN_KEYS if other_meta[k] != first_meta[k]]
        if differing:
            raise MergeError(f"{path} comes from a different run than {partials[0]} (differs in {differing})")
        if {tuple(s) for s in shards} & {tuple(s) for s in other_meta["shards"]}:
            raise MergeError(f"{path} repeats shard(s) {other_meta['shards']} already merged")
        shards += other_meta["shards"]
        for mine, theirs in zip(stats, other_stats):
            mine.combine(theirs)
        quality = [a + b for a, b in zip(quality, other_quality)]
        token_counts = token_counts + other_counts
        meta["windows"] += other_meta["windows"]
        meta["tokens"] += other_meta["tokens"]
        meta["pass_seconds"] += other_meta["pass_seconds"]
        meta["started"] = min(meta["started"], other_meta["started"])
        meta["finished"] = max(meta["finished"], other_meta["finished"])
    meta["shards"] = sorted(shards)
    corpus = _corpus_for(first_meta)
    connection = open_atlas(partials[0])
    try:
        results = []
        for row, sae_stats, sae_quality in zip(sae_rows, stats, quality):
            logits, neighbours = _weight_tables(connection, row["sae"], row["d_sae"])
            info = {
                k: row[k]
                for k in (
                    "name",
                    "spec",
                    "hook_name",
                    "hook_name_out",
                    "architecture",
                    "is_transcoder",
                    "d_in",
                    "d_sae",
                    "content_hash",
                )
            }
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
        "seconds": round(time.monotonic() - started, 1),
    }


def _corpus_for(meta: dict):
    """Re-read the run's corpus (for window tokens and documents) and check it is the same content."""
    from analysis.model_loading import load_tokenizer

    corpus = load_corpus(meta["corpus"]["spec"], load_tokenizer(meta["model"]["spec"]))
    if corpus.content_hash != meta["corpus"]["content_hash"]:
        raise MergeError(f"corpus {meta['corpus']['spec']!r} has changed since the partial atlases were built")
    return corpus
