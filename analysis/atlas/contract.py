"""The atlas file's contract, declared once: every table's columns, types and row order, the
indexes, SQL macros and derived tables, the schema version and the migrations from older versions.

The writer (``store.py``) creates the tables from these declarations and DuckDB casts what it
inserts to the declared types, so no column is typed by its values; the reader (``reader.py``)
checks the version and applies ``MIGRATIONS``; the synthetic bench builds the same tables; and
the tables section of ``docs/SCHEMA.md`` is generated from here:

    python -m analysis.atlas.contract --write docs/SCHEMA.md   # regenerate it
    python -m analysis.atlas.contract --check docs/SCHEMA.md   # exit 1 when it is out of date

Torch-free (numpy and the label template only): the dashboard imports this through the reader.
Any change to a declaration below is a schema change: bump ``SCHEMA_VERSION``, add a migration
when older atlases can be brought up to date in SQL, and regenerate the document.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.atlas.labels import TEMPLATE_PATTERN

SCHEMA_VERSION = 3

# Array widths the file fixes (changing one is a schema change); the statistics use them from here.
HIST_BINS = 100  # linear histogram bins over [0, 2^range_exp)
N_INTERVALS = 20  # intervals over [0, 2^range_exp) that interval samples are drawn from
LOG_BINS_PER_OCTAVE = 4
LOG_MIN_EXP = -10  # log histogram spans [2**-10, 2**12); values beyond fall in the end bins
LOG_MAX_EXP = 12
LOG_BINS = (LOG_MAX_EXP - LOG_MIN_EXP) * LOG_BINS_PER_OCTAVE
LOGIT_ROWS = 10  # promoted and suppressed tokens kept per latent
LOGIT_HIST_BINS = 50
DENSITY_BINS = np.linspace(-8, 0, 49)  # log10 density edges of the per-SAE histogram across latents


@dataclass(frozen=True)
class Column:
    """One column: its DuckDB type (``{context}`` stands for ``meta.context``) and what it holds."""

    name: str
    type: str
    about: str = ""
    optional: bool = False  # left out of the table when no SAE of the run has a value for it


@dataclass(frozen=True)
class Table:
    """One table: its columns in order, the order its rows are stored in, and what it is for."""

    name: str
    columns: tuple[Column, ...]
    order: str  # ORDER BY of the stored rows ("" for none)
    about: str
    key: str = ""  # the primary-key column, if any

    def create(self, context: int, leave_out: frozenset[str] = frozenset()) -> str:
        """The CREATE TABLE statement, without the optional columns named in ``leave_out``."""
        columns = ", ".join(
            f'"{c.name}" {c.type.format(context=context)}' + (" PRIMARY KEY" if c.name == self.key else "")
            for c in self.columns
            if not (c.optional and c.name in leave_out)
        )
        return f"CREATE TABLE {self.name} ({columns})"

    def optional_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns if c.optional)


def _columns(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(name, type_, about) for name, type_, about in specs)


SAE_INFO = (
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
_LOGIT_ABOUT = (
    "tokens the decoder direction promotes/suppresses most, through the final LayerNorm's centring and gain and the "
    "unembedding (these columns exist when some SAE of the run writes to the residual stream)"
)

META = Table(
    "meta",
    _columns(("key", "VARCHAR", ""), ("value", "VARCHAR", "JSON")),
    order="",
    key="key",
    about="One row per key; the keys are listed under [meta](#meta-keys) above.",
)
SAES = Table(
    "saes",
    _columns(
        ("name", "VARCHAR", "the name given on the command line or the SAE's folder name"),
        ("spec", "VARCHAR", "where it was loaded from"),
        ("hook_name", "VARCHAR", "the hook it reads"),
        ("hook_name_out", "VARCHAR", "the hook a transcoder writes (NULL for an SAE)"),
        ("architecture", "VARCHAR", ""),
        ("is_transcoder", "BOOLEAN", ""),
        ("d_in", "INTEGER", ""),
        ("d_sae", "INTEGER", "number of latents"),
        ("content_hash", "VARCHAR", "sha256 over the weights"),
        ("sae", "INTEGER", "its index in the run"),
        ("tokens", "BIGINT", "non-special tokens seen"),
        ("mean_l0", "DOUBLE", ""),
        ("l0_counts", "BIGINT[]", "tokens by number of firing latents"),
        ("explained_variance", "DOUBLE", "measured on the quality windows"),
        ("ce_loss_clean", "DOUBLE", ""),
        ("ce_loss_with_sae", "DOUBLE", ""),
        ("ce_loss_zero_ablation", "DOUBLE", ""),
        ("ce_loss_recovered", "DOUBLE", ""),
        ("quality_tokens", "BIGINT", "tokens the quality numbers were measured on"),
        ("ce_tokens", "BIGINT", "tokens the CE losses were measured on"),
        ("quality_sums", "VARCHAR", "JSON of the additive sums behind the quality numbers, for merging"),
        ("dead", "BIGINT", "latents that never fired"),
        ("dense", "BIGINT", "latents firing on more than 10% of tokens"),
        ("density_log10_edges", "DOUBLE[]", "bin edges of the histogram of log10 density across firing latents"),
        ("density_counts", "BIGINT[]", "its counts"),
    ),
    order="sae",
    about="One row per SAE: the first nine columns are `meta.saes`. The quality numbers are measured on "
    "windows whose id is a multiple of `meta.quality_stride`, about 64 spread over the run.",
)
FEATURES = Table(
    "features",
    (
        *_columns(
            ("sae", "INTEGER", ""),
            ("latent", "INTEGER", ""),
            ("fire_count", "BIGINT", "non-special tokens where the latent is > 0"),
            ("density", "DOUBLE", "`fire_count` over all non-special tokens"),
            ("max_act", "FLOAT", ""),
            ("mean_act", "DOUBLE", "mean when firing"),
            ("act_sum", "DOUBLE", ""),
            (
                "range_exp",
                "INTEGER",
                "`2^range_exp` is the smallest power of two above `max_act` (-1000 for a latent that never fired)",
            ),
            (
                "hist",
                f"BIGINT[{HIST_BINS}]",
                f"non-zero activations on {HIST_BINS} equal bins of `[0, 2^range_exp)` (so 51-100 bins lie under the "
                f"max; a bin is `floor(v / 2^range_exp * {HIST_BINS})`, computed exactly: in float64, where a float32 "
                f"value times {HIST_BINS} and the power-of-two scaling are exact; `interval_count` and the interval "
                "samples use the same rule)",
            ),
            (
                "log_hist",
                f"BIGINT[{LOG_BINS}]",
                f"log-spaced histogram: bin `floor({LOG_BINS_PER_OCTAVE} log2 v) + {-LOG_MIN_EXP * LOG_BINS_PER_OCTAVE}`,"
                f" i.e. quarter-octaves from 2^{LOG_MIN_EXP} to 2^{LOG_MAX_EXP} (end bins hold values beyond)",
            ),
            (
                "interval_count",
                f"BIGINT[{N_INTERVALS}]",
                f"firing tokens per interval: {N_INTERVALS} equal intervals of `[0, 2^range_exp)` "
                "(11-20 of them lie under the max)",
            ),
            ("label", "VARCHAR", "short automatic label"),
            ("label_source", "VARCHAR", "`'auto'`"),
            (
                "top_tokens",
                "INTEGER[]",
                "the tokens the label names as firing (most enriched in its top examples; empty for a latent that "
                "never fired)",
            ),
        ),
        Column("top_logit_tokens", f"INTEGER[{LOGIT_ROWS}]", _LOGIT_ABOUT, optional=True),
        Column("top_logit_values", f"FLOAT[{LOGIT_ROWS}]", "their effects", optional=True),
        Column("bottom_logit_tokens", f"INTEGER[{LOGIT_ROWS}]", "the tokens it suppresses most", optional=True),
        Column("bottom_logit_values", f"FLOAT[{LOGIT_ROWS}]", "their effects", optional=True),
        Column("logit_hist_min", "FLOAT", "range of the effect over the whole vocabulary", optional=True),
        Column("logit_hist_max", "FLOAT", "", optional=True),
        Column("logit_hist", f"INTEGER[{LOGIT_HIST_BINS}]", "histogram of that effect over the range", optional=True),
    ),
    order="sae, latent",
    about="One row per latent of every SAE, so the row of latent `l` of SAE `s` is `rowid` = (sum of `d_sae` over "
    "the SAEs before `s`) + `l`: the dashboard reads a feature's row, and ranges of features, by `rowid`. Ranges are "
    "powers of two rather than `[0, max]` because the max is only known at the end of the pass: on a power-of-two "
    "range, a raised max merges bins pairwise, so one pass, shards and resumed runs all give identical counts and "
    "samples.",
)
EXAMPLES = Table(
    "examples",
    _columns(
        ("sae", "INTEGER", ""),
        ("latent", "INTEGER", ""),
        ("kind", "VARCHAR", "`'top'` or `'interval'`"),
        ("interval_index", "SMALLINT", "the interval sampled from (-1 on top rows)"),
        ("rank", "SMALLINT", "rank within the top windows, or within the interval's samples"),
        ("window_id", "BIGINT", ""),
        ("position", "SMALLINT", "top: first position of the window's max; interval: the sampled token"),
        ("value", "FLOAT", "the activation there"),
        ("sample_key", "BIGINT", "interval samples' hash key (-1 on top rows)"),
        ("document", "INTEGER", "index into `documents` of the token at `position`"),
        ("act_positions", "SMALLINT[]", "the positions where the latent is non-zero over the whole window"),
        ("act_values", "FLOAT[]", "their activations, for top windows (exact; NULL on interval rows)"),
        (
            "act_values_f16",
            "SMALLINT[]",
            "their activations for interval samples, as float16 bit patterns (NULL on top rows)",
        ),
    ),
    order="sae, latent, kind DESC, interval_index, rank",
    about="`kind = 'top'`: the `top_k` windows with the highest max activation (ties: lower window id first). "
    "`kind = 'interval'`: up to 5 firing tokens per interval, those with the smallest `sample_key` = hash(global "
    "token id, latent, seed, SAE): random, reproducible, independent of batching and sharding. Interval samples keep "
    "the float16 precision they are kept in while running: they are most of the rows, and half the bytes keeps the "
    "million-token demo atlas under 40 MB. The macro `example_acts(act_values, act_values_f16)` gives either kind's "
    "activations as FLOAT[].",
)
WINDOWS = Table(
    "windows",
    _columns(("window_id", "BIGINT", ""), ("tokens", "INTEGER[{context}]", "BOS and the window's stream tokens")),
    order="window_id",
    about="Every window an example refers to.",
)
DOCUMENTS = Table(
    "documents",
    _columns(
        ("document", "INTEGER", ""),
        ("doc_id", "VARCHAR", ""),
        ("domain", "VARCHAR", ""),
        ("source", "VARCHAR", ""),
        ("start_token", "BIGINT", "stream offset of its first token"),
    ),
    order="document",
    about="Every corpus document the run read.",
)
TOKENS = Table(
    "tokens",
    _columns(
        ("token", "INTEGER", ""),
        ("text", "VARCHAR", "the decoded string (data, never markup)"),
        ("corpus_count", "BIGINT", "its count over the processed non-special tokens"),
    ),
    order="token",
    about="Every vocabulary id.",
)
NEIGHBOURS = Table(
    "neighbours",
    _columns(
        ("sae", "INTEGER", ""),
        ("latent", "INTEGER", ""),
        ("scope", "VARCHAR", "`'same'` within the SAE, `'other'` across the other SAEs of the run"),
        ("rank", "SMALLINT", ""),
        ("other_sae", "INTEGER", ""),
        ("other_latent", "INTEGER", ""),
        ("cosine", "FLOAT", "decoder cosine similarity in the residual stream"),
        ("other_label", "VARCHAR", "the other latent's automatic label, so a feature page reads one range of rows"),
    ),
    order="sae, latent, scope DESC, rank",
    about="The 10 nearest latents by decoder cosine similarity.",
)
LABEL_TERMS = Table(
    "label_terms",
    _columns(("term", "VARCHAR", ""), ("sae", "INTEGER", ""), ("latent", "INTEGER", "")),
    order="term, sae, latent",
    about="Every lower-cased word (`[[:alnum:]_]+`) of each automatic label, without the words the label template "
    "adds (`fires on`, `promotes`): a word-prefix search is a range scan of this table, where a substring search "
    "would read every label.",
)
TABLES = (META, SAES, FEATURES, EXAMPLES, WINDOWS, DOCUMENTS, TOKENS, NEIGHBOURS, LABEL_TERMS)
# Only in a partial atlas of a latent-range shard (``precompute --latent-shard j/m``), never in an atlas:
# ``merge`` sums these counts over the ranges to the whole SAE's ``saes.l0_counts``.
TOKEN_L0 = Table(
    "token_l0",
    _columns(
        ("sae", "INTEGER", ""),
        ("window_id", "BIGINT", ""),
        (
            "l0",
            "INTEGER[{context}]",
            "each position's count of firing latents of the shard's range; -1 at special tokens",
        ),
    ),
    order="sae, window_id",
    about="Only in the partial atlas of a latent-range shard (`meta.latent_shard` [j, m]), one row per SAE and "
    "window of the shard; `merge` sums the ranges' counts per token into `saes.l0_counts`.",
)
PARTIAL_TABLES = (TOKEN_L0,)
TABLE_NAMES = tuple(table.name for table in TABLES)
NEIGHBOUR_INPUT = tuple(c for c in NEIGHBOURS.columns if c.name != "other_label")  # what the writer supplies


def fill_neighbours(source: str) -> str:
    """INSERT of ``neighbours`` from ``source`` (its columns but ``other_label``) once ``features``
    exists: each row gets the other latent's automatic label."""
    return (
        "INSERT INTO neighbours SELECT g.sae, g.latent, g.scope, g.rank, g.other_sae, g.other_latent, g.cosine, "
        f"coalesce(f.label, '') FROM {source} g LEFT JOIN features f "
        f"ON f.sae = g.other_sae AND f.latent = g.other_latent ORDER BY {_prefixed(NEIGHBOURS.order, 'g')}"
    )


def _prefixed(order: str, alias: str) -> str:
    return ", ".join(f"{alias}.{term}" for term in order.split(", "))


# every lower-cased word of each automatic label (not the words the template adds), sorted, so a
# word-prefix search is a range scan
FILL_LABEL_TERMS = (
    "INSERT INTO label_terms SELECT DISTINCT lower(unnest(regexp_extract_all(regexp_replace(label, "
    f"'{TEMPLATE_PATTERN}', ' ', 'g'), '[[:alnum:]_]+'))) AS term, sae, latent FROM features "
    f"ORDER BY {LABEL_TERMS.order}"
)
INDEXES = (
    # point lookups of the windows and documents a feature page shows (a range scan cannot: they are scattered)
    "CREATE UNIQUE INDEX windows_by_id ON windows (window_id)",
    "CREATE UNIQUE INDEX documents_by_id ON documents (document)",
)
MACROS = (
    # float16 bits (SMALLINT) to a number, for interval samples' activations
    "CREATE MACRO half_to_float(h) AS (CASE WHEN h < 0 THEN -1 ELSE 1 END) * (CASE WHEN (h & 32767) >> 10 = 0 "
    "THEN (h & 1023)::DOUBLE * 2 ** -24 ELSE ((h & 1023) + 1024)::DOUBLE * 2 ** (((h & 32767) >> 10) - 25) END)",
    # an example's per-token activations whatever its kind: SELECT example_acts(act_values, act_values_f16) ...
    "CREATE MACRO example_acts(values32, values16) AS "
    "coalesce(values32, list_transform(values16, lambda h: half_to_float(h)::FLOAT))",
)
FINISH = (FILL_LABEL_TERMS, *INDEXES, *MACROS)  # run after ``neighbours`` is filled


@dataclass(frozen=True)
class Migration:
    """SQL that brings an atlas of ``from_version`` to ``from_version + 1`` in place."""

    from_version: int
    statements: tuple[str, ...]
    about: str


# In order; each one's from_version is the previous one's + 1. Versions 1 and 2 have none: their
# features lack `top_tokens`, which needs the corpus and the model's tokenizer, so they are rebuilt.
MIGRATIONS: tuple[Migration, ...] = ()


def migration_path(version: int, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[Migration] | None:
    """The migrations that bring ``version`` to ``SCHEMA_VERSION`` (empty when it is current), or
    None when there is no such chain."""
    steps = {m.from_version: m for m in migrations}
    path = []
    while version < SCHEMA_VERSION:
        if version not in steps:
            return None
        path.append(steps[version])
        version += 1
    return path if version == SCHEMA_VERSION else None


BEGIN_MARK = "<!-- BEGIN tables: generated by `python -m analysis.atlas.contract --write docs/SCHEMA.md` -->"
END_MARK = "<!-- END tables -->"


def tables_markdown() -> str:
    """The tables section of docs/SCHEMA.md: each table's order, purpose and columns with types."""
    parts = []
    for table in (*TABLES, *PARTIAL_TABLES):
        order = f" (primary order: {table.order})" if table.order else ""
        lines = [f"### {table.name}{order}", "", table.about, "", "| column | type | meaning |", "|---|---|---|"]
        for c in table.columns:
            type_ = c.type.replace("{context}", "context") + (" PRIMARY KEY" if c.name == table.key else "")
            lines.append(f"| {c.name} | {type_} | {c.about}{' *(optional)*' if c.optional else ''} |")
        parts.append("\n".join(lines))
    parts.append(
        "### Indexes and macros\n\n"
        + "\n".join(f"- `{statement}`" for statement in INDEXES)
        + "\n- `half_to_float(h)`: float16 bits (SMALLINT) to a number; `example_acts(act_values, act_values_f16)`: "
        "an example's activations as FLOAT[] whichever column holds them.\n\n"
        f"Migrations to version {SCHEMA_VERSION}: "
        + ("; ".join(f"{m.from_version} → {m.from_version + 1}: {m.about}" for m in MIGRATIONS) or "none")
        + "."
    )
    return "\n\n".join(parts)


def with_tables_section(document: str) -> str:
    """``document`` with the text between the two marks replaced by ``tables_markdown()``."""
    start, end = document.find(BEGIN_MARK), document.find(END_MARK)
    if start < 0 or end < start:
        raise ValueError(f"the document lacks the marks {BEGIN_MARK!r} ... {END_MARK!r}")
    return f"{document[: start + len(BEGIN_MARK)]}\n{tables_markdown()}\n{document[end:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check the tables section of docs/SCHEMA.md.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="SCHEMA_MD", help="regenerate the section in this file")
    action.add_argument("--check", type=Path, metavar="SCHEMA_MD", help="exit 1 when the section is out of date")
    args = parser.parse_args(argv)
    path = args.write or args.check
    try:
        document = path.read_text(encoding="utf-8")
        wanted = with_tables_section(document)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.write:
        path.write_text(wanted, encoding="utf-8")
        return 0
    if wanted != document:
        print(f"{path} is out of date: run python -m analysis.atlas.contract --write {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
