"""A synthetic atlas at the scale of a large SAE release, to benchmark dashboard queries on.

Same tables, column types, row orders and SQL macros as an atlas written by `python -m analysis
precompute`: the tables are created from the declarations in `analysis/atlas/contract.py`, filled with deterministic pseudo-random data made inside DuckDB
(hash-based, no Python loop over rows). The data is shaped like a real pass: log-normal
densities with some dead latents, per-interval counts that agree with `hist`, `log_hist`,
`fire_count` and the interval samples, top windows whose values fall in the intervals that fire,
window and document ids that refer to rows of `windows` and `documents`.

    python bench/synthetic_atlas.py --out /tmp/synthetic_1m.duckdb --saes 8 --latents 1000000 \
        --examples-per-latent 30 --reference data/demo/atlas.duckdb

After writing, the file is opened with `open_atlas`, its `DESCRIBE` of every table is compared with
the reference atlas's, every table's primary order and the macros are checked (it fails on any
difference). At the default sizes it takes about 9 minutes on 2 cores and 3.6 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from analysis.atlas import contract
from analysis.atlas.contract import DENSITY_BINS, SCHEMA_VERSION, TABLE_NAMES
from analysis.atlas.reader import open_atlas
from analysis.errors import SAEscopeError
from analysis.sae_metrics import DENSE_FRACTION

DEFAULT_REFERENCE = Path(__file__).resolve().parent.parent / "data" / "demo" / "atlas.duckdb"
TOP_K = 20
INTERVALS = 20
SAMPLES_PER_INTERVAL = 5
NEIGHBOURS = 10
MAX_WINDOWS = 2_000_000  # distinct windows the examples share (a real pass over ~1B tokens refers to more)
WINDOW_STRIDE = 4  # referenced windows are one in four of the corpus's, so window ids have gaps as in a real atlas
DOCUMENT_TOKENS = 1024  # mean document length; lengths vary between half and one and a half of it
QUALITY_WINDOWS = 64
CHUNK_LATENTS = 32_768  # latents per insert: about a million example rows

ORDER_KEYS = {  # each table's documented primary order, as one comparable key
    "saes": "sae",
    "features": "(sae, latent)",
    "windows": "window_id",
    "documents": "document",
    "tokens": "token",
    "examples": "(sae, latent, kind = 'interval', interval_index, rank)",
    "neighbours": "(sae, latent, scope = 'other', rank)",
    "label_terms": "(term, sae, latent)",
}


class SyntheticAtlasError(SAEscopeError, RuntimeError):
    """The synthetic atlas differs from the real schema, is out of order, or its macros do not read it."""


@dataclass(frozen=True)
class Plan:
    """Sizes of the synthetic run, fixed before any row is made."""

    saes: int
    latents: int
    examples_per_latent: int
    context: int
    vocab: int
    seed: int

    @property
    def d_sae(self) -> list[int]:
        """An exact split of ``latents`` (the first SAEs take the remainder)."""
        base, extra = divmod(self.latents, self.saes)
        return [base + (i < extra) for i in range(self.saes)]

    @property
    def distinct_windows(self) -> int:
        return int(min(MAX_WINDOWS, max(TOP_K * 10, self.latents * self.examples_per_latent // 15)))

    @property
    def total_windows(self) -> int:
        return self.distinct_windows * WINDOW_STRIDE

    @property
    def stream_tokens(self) -> int:
        """Non-special tokens the pass saw: every window is BOS plus ``context - 1`` stream tokens."""
        return self.total_windows * (self.context - 1)

    def dead_fraction(self, sae: int) -> float:
        return 0.015 * (1 + sae % 3)

    def block_spread(self, sae: int) -> float:
        """Twice (mean low intervals - 1): low intervals carry 5 samples each, the max's interval about 2,
        the top windows 20, so this many gives ``examples_per_latent`` on average over live and dead."""
        per_live = self.examples_per_latent / (1 - self.dead_fraction(sae))
        return max(0.0, 2 * ((per_live - TOP_K - 2) / SAMPLES_PER_INTERVAL - 1))


def _scalar(connection: duckdb.DuckDBPyConnection, sql: str):
    """The first value of the result (an INSERT's is its row count), read to the end as DuckDB 2 requires."""
    return connection.execute(sql).fetchall()[0][0]


def _macros(connection: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Temporary helpers (not stored in the file): seeded uniforms, Zipf-like tokens, float16 bits, documents."""
    seed, vocab = plan.seed, plan.vocab
    syllables = [
        "the",
        "an",
        "ing",
        "er",
        "on",
        "at",
        "re",
        "st",
        "al",
        "ic",
        "ed",
        "ly",
        "ion",
        "ent",
        "or",
        "es",
        "in",
        "ar",
        "ow",
        "um",
        "ex",
        "pro",
        "con",
        "de",
        "ful",
        "ness",
        "ab",
        "ver",
        "qu",
        "ph",
    ]

    def pick(salt: int) -> str:
        return f"{syllables}[1 + (h(t, {salt}, 0, 0) % {len(syllables)})::BIGINT]"

    for sql in (
        # DuckDB combines a multi-argument hash weakly (hash(s, a, b, 3) and hash(s, a, b, 4) correlate at
        # 0.998): hashing the result again gives independent streams
        f"CREATE TEMP MACRO h(a, b, c, d) AS hash(hash({seed}, a, b, c, d))",
        "CREATE TEMP MACRO u(a, b, c) AS (h(a, b, c, 0) >> 11)::DOUBLE / 9007199254740992",
        # floor((vocab - 1) u^3): small ids are common, as in a BPE vocabulary; vocab - 1 stays the BOS
        f"CREATE TEMP MACRO token_of(a, b, c) AS floor({vocab - 1} * pow(u(a, b, c), 3))::INTEGER",
        f"CREATE TEMP MACRO token_text(t) AS CASE WHEN t = {vocab - 1} THEN '<|endoftext|>' ELSE "
        f"(CASE WHEN h(t, 1, 0, 0) % 3 > 0 THEN ' ' ELSE '' END) || {pick(2)} || "
        f"(CASE WHEN t >= 256 THEN {pick(3)} ELSE '' END) || (CASE WHEN t >= 8192 THEN {pick(4)} ELSE '' END) END",
        # float32 -> float16 bits (positive, normal or subnormal); a rounding carry moves into the exponent by itself
        "CREATE TEMP MACRO half_bits(v) AS (CASE WHEN v < 2 ** -14 THEN round(v * 2 ** 24) ELSE "
        "(floor(log2(v)) + 15) * 1024 + round((v / 2 ** floor(log2(v)) - 1) * 1024) END)::SMALLINT",
        "CREATE TEMP MACRO log_bin(v) AS least(87, greatest(0, floor(4 * log2(v)) + 40))::INTEGER",
        f"CREATE TEMP MACRO doc_start(d) AS d * {DOCUMENT_TOKENS} + "
        f"(CASE WHEN d = 0 THEN 0 ELSE h(d, 2, 0, 0) % {DOCUMENT_TOKENS // 2} END)::BIGINT",
        f"CREATE TEMP MACRO doc_of(t) AS t // {DOCUMENT_TOKENS} - "
        f"(CASE WHEN t < doc_start(t // {DOCUMENT_TOKENS}) THEN 1 ELSE 0 END)",
    ):
        connection.execute(sql)


def _latent_parameters(connection: duckdb.DuckDBPyConnection, plan: Plan, sae: int, lo: int, hi: int) -> None:
    """One row per latent of the chunk: its peak, its firing intervals and their token counts.

    The max's interval is 10..19 (the range is the next power of two) and holds 1-3 tokens; below it
    a block of intervals holds the rest, most of them at the bottom, as above a JumpReLU threshold.
    A block of that shape keeps the top windows' values close to each other, as in a real atlas.
    """
    connection.execute(f"""
        CREATE OR REPLACE TEMP TABLE lat AS
        WITH base AS (
            SELECT latent::INTEGER AS latent, u({sae}, latent, 1) < {plan.dead_fraction(sae)} AS dead,
                   (2 ** (1 + 4 * u({sae}, latent, 2)))::FLOAT AS peak,
                   least(-0.5, -4.2 + 0.8 * sqrt(-2 * ln(1 - u({sae}, latent, 3)))
                                    * cos(2 * pi() * u({sae}, latent, 4))) AS log_density,
                   1 + floor({plan.block_spread(sae)} * u({sae}, latent, 6) + u({sae}, latent, 7))::INTEGER AS wanted,
                   1 + floor(3 * u({sae}, latent, 8))::INTEGER AS at_max
            FROM range({lo}, {hi}) t(latent)
        ), shaped AS (
            SELECT *, floor(log2(peak))::INTEGER + 1 AS exponent,
                   floor(peak / 2 ** (floor(log2(peak)) + 1) * {INTERVALS})::INTEGER AS top_interval
            FROM base
        ), sized AS (
            SELECT *, 2 ** exponent / {INTERVALS} AS width, least(wanted, top_interval) AS blocks,
                   top_interval - least(wanted, top_interval) AS first,
                   greatest(100, round({plan.stream_tokens} * 10 ** log_density)) AS budget
            FROM shaped
        )
        SELECT *, list_transform(range({INTERVALS}), lambda i: CASE WHEN dead THEN 0 WHEN i = top_interval THEN at_max
                      WHEN i >= first AND i < first + blocks
                      THEN greatest(1, floor(budget * 0.55 * 0.45 ** (i - first) / (1 - 0.45 ** blocks))) ELSE 0 END
                  )::BIGINT[] AS counts
        FROM sized
    """)


def _insert_features(connection: duckdb.DuckDBPyConnection, plan: Plan, sae: int) -> int:
    """Statistics that agree with ``counts``; logit effects and labels from seeded tokens. By name, so a
    column the contract adds later is NULL here until this gives it values."""
    return _scalar(
        connection,
        f"""
        INSERT INTO features BY NAME
        WITH stats AS (
            SELECT *, list_sum(counts)::BIGINT AS fire_count,
                   list_sum(list_transform(counts, lambda c, i: c * CASE WHEN i - 1 = top_interval
                       THEN (peak + top_interval * width) / 2 ELSE (i - 0.5) * width END)) AS act_sum,
                   floor(peak / 2 ** exponent * 100)::INTEGER AS peak_bin,
                   list_filter(list_transform(counts, lambda c, i: {{'bin': log_bin(CASE WHEN i - 1 = top_interval
                       THEN peak ELSE (i - 0.5) * width END), 'count': c}}), lambda p: p.count > 0) AS log_counts,
                   0.3 + 0.4 * u({sae}, latent, 20) AS top_logit, 0.3 + 0.3 * u({sae}, latent, 21) AS bottom_logit,
                   list_transform(range(10), lambda k: token_of({sae}, latent, 100 + k)) AS promoted,
                   list_transform(range(1 + floor(3 * u({sae}, latent, 22))::INTEGER),
                                  lambda k: token_of({sae}, latent, 200 + k)) AS fired_on
            FROM lat
        )
        SELECT {sae} AS sae, latent, fire_count, fire_count / {plan.stream_tokens} AS density,
               CASE WHEN dead THEN 0 ELSE peak END AS max_act,
               CASE WHEN fire_count > 0 THEN act_sum / fire_count ELSE 0 END AS mean_act,
               coalesce(act_sum, 0) AS act_sum, CASE WHEN dead THEN -1000 ELSE exponent END AS range_exp,
               list_transform(range(100), lambda b: CASE WHEN b // 5 = top_interval
                   THEN (CASE WHEN b = peak_bin THEN counts[b // 5 + 1] ELSE 0 END)
                   ELSE counts[b // 5 + 1] // 5 + (CASE WHEN b % 5 < counts[b // 5 + 1] % 5 THEN 1 ELSE 0 END) END
               )::BIGINT[100] AS hist,
               list_transform(range(88), lambda j: coalesce(list_sum(list_transform(log_counts,
                   lambda p: CASE WHEN p.bin = j THEN p.count ELSE 0 END)), 0))::BIGINT[88] AS log_hist,
               counts::BIGINT[20] AS interval_count,
               CASE WHEN dead THEN '' ELSE 'fires on ' || array_to_string(list_transform(fired_on,
                   lambda t: '''' || token_text(t) || ''''), ', ') || ' · promotes ' || array_to_string(
                   list_transform(promoted[1:3], lambda t: '''' || token_text(t) || ''''), ', ') END AS label,
               'auto' AS label_source,
               CASE WHEN dead THEN [] ELSE fired_on END::INTEGER[] AS top_tokens,
               promoted::INTEGER[10] AS top_logit_tokens,
               list_transform(range(10), lambda k: top_logit * exp(-(0.02 + 0.08 * u({sae}, latent, 23)) * k))
                   ::FLOAT[10] AS top_logit_values,
               list_transform(range(10), lambda k: token_of({sae}, latent, 300 + k))::INTEGER[10] AS bottom_logit_tokens,
               list_transform(range(10), lambda k: -bottom_logit * exp(-(0.01 + 0.04 * u({sae}, latent, 24)) * k))
                   ::FLOAT[10] AS bottom_logit_values,
               (-bottom_logit)::FLOAT AS logit_hist_min, top_logit::FLOAT AS logit_hist_max,
               list_transform(range(50), lambda k: CASE WHEN k IN (0, 49) THEN 1 ELSE
                   round({plan.vocab} * exp(-((k + 0.5 - 50 * bottom_logit / (top_logit + bottom_logit)) ** 2)
                         / (2 * (4 + 3 * u({sae}, latent, 25)) ** 2)) / ((4 + 3 * u({sae}, latent, 25)) * 2.5066))
                   END)::INTEGER[50] AS logit_hist
        FROM stats ORDER BY latent
    """,
    )


def _insert_examples(connection: duckdb.DuckDBPyConnection, plan: Plan, sae: int) -> int:
    """Top windows and interval samples of the chunk, in the atlas's order; returns the rows added.

    The row keys are sorted while they are small, then the lists are computed by a plain projection
    of that table, which keeps its order on insert.
    """
    windows, context = plan.distinct_windows, plan.context
    connection.execute(f"""
        CREATE OR REPLACE TEMP TABLE slots AS
        SELECT latent, slot.kind AS kind, slot.i AS interval_index, slot.r AS rank, peak, width, top_interval,
               first + blocks - 1 AS block_top, counts[top_interval + 1] AS at_max
        FROM (SELECT *, unnest(list_concat(
                  list_transform(range(least({TOP_K}, list_sum(counts)::BIGINT)),
                                 lambda r: {{'kind': 'top', 'i': -1::BIGINT, 'r': r}}),
                  flatten(list_transform(counts, lambda c, i: list_transform(range(least({SAMPLES_PER_INTERVAL}, c)),
                                 lambda r: {{'kind': 'interval', 'i': i - 1, 'r': r}}))))) AS slot
              FROM lat WHERE NOT dead)
        ORDER BY latent, kind DESC, interval_index, rank
    """)
    return _scalar(
        connection,
        f"""
        INSERT INTO examples
        WITH keyed AS (
            SELECT *, latent * 128 + CASE WHEN kind = 'top' THEN rank
                                          ELSE {TOP_K} + interval_index * {SAMPLES_PER_INTERVAL} + rank END AS row_key
            FROM slots
        ), placed AS (
            SELECT *,
                   CASE WHEN kind = 'top' THEN ((h({sae}, latent, 50, 0) % {windows})::BIGINT
                                                + rank * {max(1, windows // TOP_K)}) % {windows}
                        ELSE (h({sae}, row_key, 51, 0) % {windows})::BIGINT END AS pick,
                   1 + (h({sae}, row_key, 52, 0) % {context - 1})::INTEGER AS pos,
                   CASE WHEN kind = 'top' AND rank < at_max THEN peak - (peak - top_interval * width) * rank / at_max
                        WHEN kind = 'top' THEN (block_top + 1 - (rank - at_max + 0.5) / {TOP_K}) * width
                        WHEN interval_index = top_interval THEN peak - (peak - top_interval * width)
                                                                       * u({sae}, row_key, 53)
                        ELSE (interval_index + 0.02 + 0.96 * u({sae}, row_key, 53)) * width END AS v,
                   5 + floor(35 * u({sae}, row_key, 54) ** 2)::INTEGER AS spread
            FROM keyed
        ), located AS (
            SELECT *, pick * {WINDOW_STRIDE} + (h(pick, 55, 0, 0) % {WINDOW_STRIDE})::BIGINT AS wid,
                   list_sort(list_distinct(list_append(list_transform(range(spread),
                       lambda k: 1 + (h({sae}, row_key, 56, k) % {context - 1})::INTEGER), pos))) AS positions,
                   half_bits(0.03 * peak) AS low_bits, half_bits(peak) AS high_bits
            FROM placed
        )
        SELECT {sae}, latent, kind, interval_index::SMALLINT, rank::SMALLINT, wid, pos::SMALLINT, v::FLOAT,
               CASE WHEN kind = 'top' THEN -1 ELSE floor((rank + u({sae}, row_key, 57)) * 2 ** 50)::BIGINT END,
               doc_of(wid * {context - 1} + pos - 1)::INTEGER, positions::SMALLINT[],
               CASE WHEN kind = 'top' THEN list_transform(positions, lambda q: CASE WHEN q = pos THEN v
                    ELSE v * (0.05 + 0.9 * (h({sae}, row_key, 58, q) >> 11)::DOUBLE / 9007199254740992) END)::FLOAT[]
               END,
               CASE WHEN kind = 'interval' THEN list_transform(positions, lambda q: CASE WHEN q = pos
                    THEN half_bits(v::FLOAT)
                    ELSE low_bits + (h({sae}, row_key, 59, q) % (high_bits - low_bits))::INTEGER END)::SMALLINT[]
               END
        FROM located
    """,
    )


def _insert_neighbours(connection: duckdb.DuckDBPyConnection, plan: Plan, sae: int, lo: int, hi: int) -> int:
    """10 'same' then 10 'other' neighbours per latent (no 'other' with a single SAE), cosines falling with rank."""
    per_latent = NEIGHBOURS * (2 if plan.saes > 1 else 1)
    d = plan.d_sae[sae]
    base, extra = divmod(plan.latents, plan.saes)
    other = f"({sae} + 1 + (h({sae}, r, 60, 0) % {max(1, plan.saes - 1)})::INTEGER) % {plan.saes}"
    return _scalar(
        connection,
        f"""
        INSERT INTO neighbours_raw
        WITH pairs AS (
            SELECT r, r // {per_latent} AS latent, r % {per_latent} >= {NEIGHBOURS} AS across,
                   r % {NEIGHBOURS} AS rank, {other} AS other
            FROM range({lo * per_latent}, {hi * per_latent}) t(r)
        )
        SELECT {sae}, latent, CASE WHEN across THEN 'other' ELSE 'same' END, rank::SMALLINT,
               CASE WHEN across THEN other ELSE {sae} END,
               CASE WHEN across THEN (h({sae}, r, 61, 0) % ({base} + (other < {extra})::INTEGER))::INTEGER
                    ELSE (latent + 1 + (h({sae}, r, 61, 0) % {max(1, d - 1)})::INTEGER) % {d} END,
               ((0.2 + 0.4 * u({sae}, latent, 62)) * CASE WHEN across THEN 0.9 ELSE 1 END
                * exp(-(0.02 + 0.04 * u({sae}, latent, 63)) * rank))::FLOAT
        FROM pairs
    """,
    )


def _insert_windows(connection: duckdb.DuckDBPyConnection, plan: Plan, progress: tqdm) -> None:
    """Every window an example refers to: BOS then Zipf-like tokens."""
    connection.execute(
        "CREATE OR REPLACE TEMP TABLE used AS SELECT window_id, row_number() OVER (ORDER BY window_id) "
        "AS n FROM (SELECT DISTINCT window_id FROM examples) ORDER BY window_id"
    )
    total = _scalar(connection, "SELECT count(*) FROM used")
    step = 250_000
    for start in range(0, total, step):
        inserted = _scalar(
            connection,
            f"""
            INSERT INTO windows
            SELECT window_id, list_transform(range({plan.context}), lambda i: CASE WHEN i = 0 THEN {plan.vocab - 1}
                                             ELSE token_of(window_id, i, 70) END)::INTEGER[{plan.context}]
            FROM used WHERE n > {start} AND n <= {start + step}
        """,
        )
        progress.update(inserted)


def _insert_corpus(connection: duckdb.DuckDBPyConnection, plan: Plan) -> int:
    """Documents tiling the stream, and the vocabulary with counts that match the window tokens' distribution."""
    stream, vocab = plan.stream_tokens, plan.vocab
    domains = ["web", "code", "wiki", "books", "arxiv", "news"]
    documents = _scalar(
        connection,
        f"""
        INSERT INTO documents
        SELECT d::INTEGER, domain || '/' || source || '/' || (d % 4), domain, source, doc_start(d)
        FROM (SELECT d, {domains}[1 + (h(d // 4, 3, 0, 0) % {len(domains)})::BIGINT] AS domain,
                     'doc ' || (d // 4) AS source
              FROM range({stream // DOCUMENT_TOKENS + 1}) t(d))
        WHERE doc_start(d) < {stream} ORDER BY d
    """,
    )
    _scalar(
        connection,
        f"""
        INSERT INTO tokens
        SELECT t::INTEGER, token_text(t), CASE WHEN t = {vocab - 1} THEN 0 ELSE
               round({stream} * (pow((t + 1) / {vocab - 1}, 1 / 3) - pow(t / {vocab - 1}, 1 / 3))) END
        FROM range({vocab}) r(t) ORDER BY t
    """,
    )
    return documents


def _sae_info(plan: Plan, sae: int) -> dict:
    """What ``meta.saes`` holds for one SAE: a GPT-2-small-like layer, one in four a transcoder."""
    layer = sae % 12
    transcoder = sae % 4 == 3
    return {
        "name": f"{'transcoder' if transcoder else 'resid'}-L{layer}-{sae}",
        "spec": f"synthetic/sae-{sae}",
        "hook_name": f"blocks.{layer}.ln2.hook_normalized" if transcoder else f"blocks.{layer}.hook_resid_pre",
        "hook_name_out": f"blocks.{layer}.hook_mlp_out" if transcoder else None,
        "architecture": "jumprelu_transcoder" if transcoder else "jumprelu",
        "is_transcoder": transcoder,
        "d_in": 768,
        "d_sae": plan.d_sae[sae],
        "content_hash": _sha(f"synthetic-{sae}"),
    }


def _sae_row(connection: duckdb.DuckDBPyConnection, plan: Plan, sae: int) -> dict:
    """The per-SAE summary, computed from its features as the real writer does, with plausible quality numbers."""
    count = (
        connection.execute("SELECT fire_count FROM features WHERE sae = ? ORDER BY latent", [sae])
        .fetchnumpy()["fire_count"]
        .astype(np.int64)
    )
    rng = np.random.default_rng([plan.seed, sae])
    tokens = plan.stream_tokens
    density = count / tokens
    mean_l0 = float(count.sum() / tokens)
    width = max(1.0, 0.35 * mean_l0)
    l0 = np.arange(int(mean_l0 + 5 * width) + 1)
    l0_counts = np.round(tokens * np.exp(-0.5 * ((l0 - mean_l0) / width) ** 2) / (width * math.sqrt(2 * math.pi)))
    quality_tokens = QUALITY_WINDOWS * (plan.context - 1)
    explained, recovered = 0.75 + 0.2 * rng.random(), 0.85 + 0.14 * rng.random()
    clean, zero = 3.3, 3.3 + 4 + 3 * rng.random()
    with_sae = zero - recovered * (zero - clean)
    target_sum = rng.normal(0, 50 * quality_tokens**0.5, 768)
    target_sq = float(quality_tokens * 768 * 4.0 + (target_sum**2).sum() / quality_tokens)
    sums = {
        "d_sae": plan.d_sae[sae],
        "tokens": quality_tokens,
        "l0_sum": mean_l0 * quality_tokens,
        "residual_sq": (1 - explained) * (target_sq - float((target_sum**2).sum()) / quality_tokens),
        "target_sum": target_sum.tolist(),
        "target_sq_sum": target_sq,
        "ce_sums": {"clean": clean * quality_tokens, "sae": with_sae * quality_tokens, "zero": zero * quality_tokens},
        "ce_predictions": quality_tokens + 1,
        "ce_tokens": quality_tokens,
        "fired": rng.binomial(quality_tokens, np.minimum(density, 1)).tolist(),
    }
    density_counts, _ = np.histogram(np.log10(density[count > 0]), bins=DENSITY_BINS)
    return _sae_info(plan, sae) | {
        "sae": sae,
        "tokens": tokens,
        "mean_l0": mean_l0,
        "l0_counts": l0_counts[: int(np.nonzero(l0_counts)[0].max()) + 1].astype(np.int64).tolist(),
        "explained_variance": explained,
        "ce_loss_clean": clean,
        "ce_loss_with_sae": with_sae,
        "ce_loss_zero_ablation": zero,
        "ce_loss_recovered": recovered,
        "quality_tokens": quality_tokens,
        "ce_tokens": quality_tokens,
        "quality_sums": json.dumps(sums),
        "dead": int((count == 0).sum()),
        "dense": int((count > DENSE_FRACTION * tokens).sum()),
        "density_log10_edges": DENSITY_BINS.tolist(),
        "density_counts": density_counts.tolist(),
    }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _meta(plan: Plan, documents: int, started: float, seconds: float) -> dict:
    stamp = "%Y-%m-%dT%H:%M:%S%z"
    return {
        "model": {"spec": "gpt2", "architecture": "GPT2LMHeadModel", "content_hash": _sha("synthetic-model")},
        "saes": [_sae_info(plan, sae) for sae in range(plan.saes)],
        "corpus": {
            "spec": "synthetic",
            "content_hash": _sha(f"synthetic-corpus-{plan.seed}"),
            "tokens": plan.stream_tokens,
            "documents": documents,
        },
        "context": plan.context,
        "top_k": TOP_K,
        "seed": plan.seed,
        "total_windows": plan.total_windows,
        "quality_stride": max(1, plan.total_windows // QUALITY_WINDOWS),
        "shards": [[0, 1]],
        "windows": plan.total_windows,
        "tokens": plan.total_windows * plan.context,
        "versions": {"duckdb": duckdb.__version__, "numpy": np.__version__, "synthetic_atlas": "1"},
        "started": time.strftime(stamp, time.gmtime(started)),
        "finished": time.strftime(stamp, time.gmtime()),
        "pass_seconds": seconds,
        "device": "synthetic",
        "schema_version": SCHEMA_VERSION,
    }


def _write(path: Path, plan: Plan, progress: bool) -> None:
    """Every table, chunk by chunk, into ``path`` (a temporary file the caller renames)."""
    started = time.time()
    connection = duckdb.connect(str(path))
    try:
        connection.execute("SET threads = 2")
        connection.execute("SET memory_limit = '6GB'")
        connection.execute("SET preserve_insertion_order = true")
        connection.execute("SET enable_progress_bar = false")
        _macros(connection, plan)
        for table in contract.TABLES:
            connection.execute(table.create(plan.context))
        # the writer's neighbour rows, made into `neighbours` (labels added) at the end as the writer does
        columns = ", ".join(f'"{c.name}" {c.type}' for c in contract.NEIGHBOUR_INPUT)
        connection.execute(f"CREATE TEMP TABLE neighbours_raw ({columns})")
        per_latent = 1 + plan.examples_per_latent + NEIGHBOURS * (2 if plan.saes > 1 else 1)
        bar = tqdm(
            total=plan.latents * per_latent + plan.distinct_windows,
            unit="row",
            unit_scale=True,
            desc="synthetic atlas",
            disable=not progress,
            smoothing=0.1,
        )
        sae_rows = []
        for sae, d in enumerate(plan.d_sae):
            for lo in range(0, d, CHUNK_LATENTS):
                hi = min(d, lo + CHUNK_LATENTS)
                _latent_parameters(connection, plan, sae, lo, hi)
                bar.update(
                    _insert_features(connection, plan, sae)
                    + _insert_examples(connection, plan, sae)
                    + _insert_neighbours(connection, plan, sae, lo, hi)
                )
            sae_rows.append(_sae_row(connection, plan, sae))
        _insert_windows(connection, plan, bar)
        bar.close()
        documents = _insert_corpus(connection, plan)
        connection.register("incoming", pa.Table.from_pylist(sae_rows))
        _scalar(connection, "INSERT INTO saes BY NAME SELECT * FROM incoming ORDER BY sae")
        connection.unregister("incoming")
        meta = _meta(plan, documents, started, time.time() - started)
        connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        connection.execute(contract.fill_neighbours("neighbours_raw"))
        for statement in contract.FINISH:
            connection.execute(statement)
        connection.execute("CHECKPOINT")
    finally:
        connection.close()


def _describe(connection: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str, str]]:
    return [row[:3] for row in connection.execute(f"DESCRIBE {table}").fetchall()]


def schema_differences(atlas: duckdb.DuckDBPyConnection, reference: duckdb.DuckDBPyConnection) -> list[str]:
    """Every table whose columns (name, type, nullability, in order) differ, and any difference in the
    indexes; the window length may differ when the two atlases were built with different contexts."""
    contexts = [json.loads(_scalar(c, "SELECT value FROM meta WHERE key = 'context'")) for c in (atlas, reference)]
    differences = []
    for table in TABLE_NAMES:
        ours = _describe(atlas, table)
        theirs = [
            (n, t.replace(f"[{contexts[1]}]", f"[{contexts[0]}]") if table == "windows" else t, null)
            for n, t, null in _describe(reference, table)
        ]
        if ours != theirs:
            differences.append(f"{table}: synthetic {ours} != reference {theirs}")
    indexes = [
        c.execute(
            "SELECT index_name, table_name, expressions, is_unique FROM duckdb_indexes() ORDER BY index_name"
        ).fetchall()
        for c in (atlas, reference)
    ]
    if indexes[0] != indexes[1]:
        differences.append(f"indexes: synthetic {indexes[0]} != reference {indexes[1]}")
    return differences


def order_violations(connection: duckdb.DuckDBPyConnection, table: str) -> int:
    """Rows stored before a row with a smaller primary key (0 when the table is in its documented order)."""
    key = ORDER_KEYS[table]
    return _scalar(
        connection,
        f"SELECT count(*) FROM (SELECT {key} AS k, lag({key}) OVER (ORDER BY rowid) AS prev "
        f"FROM {table}) WHERE k < prev",
    )


def macro_failures(connection: duckdb.DuckDBPyConnection) -> int:
    """Examples of the first latents of each SAE where ``example_acts`` is not a FLOAT list as long as the
    positions, or does not give ``value`` at ``position`` (to float16 precision on interval samples)."""
    return _scalar(
        connection,
        """
        SELECT count(*) FROM (
            SELECT typeof(example_acts(act_values, act_values_f16)) AS type,
                   example_acts(act_values, act_values_f16) AS acts, act_positions, position, value
            FROM examples WHERE latent < 200)
        WHERE type <> 'FLOAT[]' OR len(acts) <> len(act_positions)
           OR abs(acts[list_position(act_positions, position)] - value) > 1e-3 * value
    """,
    )


def verify(path: Path, reference: Path | None) -> None:
    """Fail loudly unless ``path`` opens as an atlas, matches ``reference``'s schema, keeps every table in its
    primary order and its macros read it."""
    connection = open_atlas(path)
    connection.execute("SET enable_progress_bar = false")
    try:
        problems = []
        if reference is not None:
            reference_connection = open_atlas(reference)
            try:
                problems += schema_differences(connection, reference_connection)
            finally:
                reference_connection.close()
        problems += [
            f"{table} is out of its primary order at {count} rows"
            for table in ORDER_KEYS
            if (count := order_violations(connection, table))
        ]
        failures = macro_failures(connection)
        if failures:
            problems.append(f"example_acts disagrees with act_positions/value on {failures} examples")
        if problems:
            raise SyntheticAtlasError(f"{path} is not a faithful synthetic atlas:\n  " + "\n  ".join(problems))
    finally:
        connection.close()


def row_counts(path: Path) -> dict[str, int]:
    connection = open_atlas(path)
    try:
        return {table: _scalar(connection, f"SELECT count(*) FROM {table}") for table in TABLE_NAMES}
    finally:
        connection.close()


def build_synthetic_atlas(
    path: str | Path,
    saes: int = 8,
    latents: int = 1_000_000,
    examples_per_latent: int = 30,
    context: int = 128,
    vocab: int = 50257,
    seed: int = 0,
    reference: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write the synthetic atlas to ``path`` (through ``path.tmp``), verify it, and return a summary."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (overwrite it with --overwrite)")
    if latents < 2 * saes or not 2 <= context <= 32767 or vocab < 2:
        raise ValueError(
            "need at least 2 latents per SAE, a context in 2..32767 (positions are SMALLINT) and a vocabulary of 2"
        )
    plan = Plan(saes, latents, examples_per_latent, context, vocab, seed)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        _write(temporary, plan, progress)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
        path.with_name(temporary.name + ".wal").unlink(missing_ok=True)
    built = time.perf_counter()
    verify(path, Path(reference) if reference is not None else None)
    return {
        "path": str(path),
        "d_sae": plan.d_sae,
        "rows": row_counts(path),
        "bytes": path.stat().st_size,
        "build_seconds": built - started,
        "verify_seconds": time.perf_counter() - built,
        "verified_against": str(reference) if reference is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--saes", type=int, default=8)
    parser.add_argument("--latents", type=int, default=1_000_000)
    parser.add_argument("--examples-per-latent", type=int, default=30)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference",
        type=Path,
        default=DEFAULT_REFERENCE if DEFAULT_REFERENCE.is_file() else None,
        help="a real atlas whose schema the synthetic one must equal (default: the demo atlas)",
    )
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    if args.reference is None:
        print(f"warning: no reference atlas ({DEFAULT_REFERENCE} is missing): the schema is not compared", flush=True)
    try:
        summary = build_synthetic_atlas(
            args.out,
            args.saes,
            args.latents,
            args.examples_per_latent,
            args.context,
            args.vocab,
            args.seed,
            args.reference,
            args.overwrite,
            progress=True,
        )
    except (SyntheticAtlasError, FileExistsError, ValueError) as error:
        sys.exit(f"error: {error}")
    d_sae = summary["d_sae"]
    print(
        f"built {args.out}: {len(d_sae)} SAEs x {sorted(set(d_sae))} latents = {sum(d_sae):,} latents, "
        f"{summary['bytes'] / 2**30:.2f} GiB, built in {summary['build_seconds']:.1f} s, "
        f"verified in {summary['verify_seconds']:.1f} s"
    )
    for table, rows in summary["rows"].items():
        print(f"  {table:<10} {rows:>14,} rows")
    print(
        f"schema {'equal to ' + summary['verified_against'] if summary['verified_against'] else 'not compared'}; "
        f"example_acts/half_to_float checked"
    )


if __name__ == "__main__":
    main()
