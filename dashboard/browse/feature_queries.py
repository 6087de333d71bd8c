"""The SQL behind the browse and triage pages, run in DuckDB and never over all rows in pandas.

Every query takes its values as parameters; only catalog aliases (made by ``Workspace``) and
column names from fixed tables here are formatted into the SQL text. Annotations come from the
user-data file, joined on the SAE's content hash so labels follow an SAE into a rebuilt atlas.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from dashboard.browse.token_names import readable_label
from dashboard.shell.workspace import Atlas, Workspace

# The default order puts first what a reader can judge: features with an automatic label that fired
# on at least 20 tokens (a page of top examples) and on at most 10% of tokens (Home's "dense" cut),
# in (SAE, feature) order; then the rarer or denser ones; then the dead or unlabelled ones.
USEFUL_FIRST = "live and labelled first"
DENSE, MIN_FIRES = 0.1, 20
ALIVE_LABELLED_SPARSE = (
    f"CASE WHEN f.fire_count = 0 OR f.label = '' THEN 2 "
    f"WHEN f.density > {DENSE} OR f.fire_count < {MIN_FIRES} THEN 1 ELSE 0 END"
)
# each order: its keys as (SQL expression over ``features f``, direction), the feature itself last
SORTS: dict[str, tuple[tuple[str, str], ...]] = {
    USEFUL_FIRST: ((ALIVE_LABELLED_SPARSE, "ASC"), ("f.sae", "ASC"), ("f.latent", "ASC")),
    "feature": (("f.sae", "ASC"), ("f.latent", "ASC")),
    "density, highest first": (("f.density", "DESC"), ("f.sae", "ASC"), ("f.latent", "ASC")),
    "density, lowest first": (("f.density", "ASC"), ("f.sae", "ASC"), ("f.latent", "ASC")),
    "max activation, highest first": (("f.max_act", "DESC"), ("f.sae", "ASC"), ("f.latent", "ASC")),
    "mean activation, highest first": (("f.mean_act", "DESC"), ("f.sae", "ASC"), ("f.latent", "ASC")),
}
# what the Feature and Triage pages show of a feature's row (each column read is a block to load)
STATS_COLUMNS = (
    "sae, latent, fire_count, density, max_act, mean_act, range_exp, hist, log_hist, interval_count, "
    "label, top_tokens, top_logit_tokens, top_logit_values, bottom_logit_tokens, bottom_logit_values, "
    "logit_hist_min, logit_hist_max, logit_hist"
)
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="feature-view")  # shared by every session
LAST_CHARACTER = "\U0010ffff"  # sorts after every string that starts with a given prefix


@dataclass(frozen=True)
class FeatureFilter:
    """What the Features table and the triage queue show; every field is optional."""

    saes: tuple[int, ...] = ()
    min_density: float | None = None
    max_density: float | None = None
    min_max_act: float | None = None
    text: str = ""  # words starting the automatic label's words, or a substring of a reviewer's label or notes
    top_token: str = ""  # exactly a token the latent fires on (automatic label) or promotes (logit effects)
    statuses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    reviewer: str = ""
    live_only: bool = False  # only features that fired on the corpus (a dead one has no examples to judge)


@dataclass(frozen=True)
class TablePage:
    rows: pd.DataFrame
    total: int


class _Query:
    """A filter as SQL over one atlas's ``features f``: conditions on its own columns, and
    semi-joins against the (small) set of annotated features, so the million-row scan never
    joins the annotations row by row. ``rows``, a range of ``features`` rows, limits the query to
    those features, and the label-word lookup with them."""

    def __init__(self, workspace: Workspace, atlas: Atlas, flt: FeatureFilter, rows: range | None = None):
        self.workspace, self.atlas, self.clauses, self.params = workspace, atlas, ["TRUE"], []
        self.rows = rows
        if rows is not None:
            self.add("f.rowid BETWEEN ? AND ?", rows[0], rows[-1])
        self._build(flt)

    def annotated(self, condition: str) -> str:
        """(sae, latent) of this atlas's features whose annotation ``n`` meets ``condition``."""
        return (
            f"SELECT s.sae, n.latent FROM {self.workspace.store.table('annotations')} n "
            f"JOIN {self.atlas.alias}.saes s ON s.content_hash = n.sae_hash WHERE {condition}"
        )

    def add(self, clause: str, *params) -> None:
        self.clauses.append(clause)
        self.params += list(params)

    @property
    def where(self) -> str:
        return " AND ".join(self.clauses)

    def _build(self, flt: FeatureFilter) -> None:
        if flt.saes:
            self.add(f"f.sae IN ({', '.join('?' for _ in flt.saes)})", *flt.saes)
        for clause, value in (
            ("f.density >= ?", flt.min_density),
            ("f.density <= ?", flt.max_density),
            ("f.max_act >= ?", flt.min_max_act),
        ):
            if value is not None:
                self.add(clause, value)
        if flt.live_only:
            self.add("f.density > 0")
        if flt.text.strip():
            self._text(flt.text.strip())
        if flt.top_token:
            self._token(flt.top_token)
        if flt.statuses:
            self._statuses(set(flt.statuses))
        if flt.tags:
            self.add(f"(f.sae, f.latent) IN ({self.annotated('list_has_any(n.tags, ?::VARCHAR[])')})", list(flt.tags))
        if flt.reviewer.strip():
            self.add(f"(f.sae, f.latent) IN ({self.annotated('n.reviewer = ?')})", flt.reviewer.strip())

    def _text(self, text: str) -> None:
        """Every word starts a word of the automatic label (the indexed ``label_terms``), or the
        text is in a reviewer's label or notes."""
        like = f"%{_like_escape(text)}%"
        matches = "n.label ILIKE ? ESCAPE '\\' OR n.notes ILIKE ? ESCAPE '\\'"
        reviewer_side = f"(f.sae, f.latent) IN ({self.annotated(matches)})"
        words = re.findall(r"\w+", text.lower())
        if not words or not all(map(self._starts_a_label_word, words)):
            self.add(f"({reviewer_side})", like, like)
            return
        within, keys = "", []
        if self.rows is not None:  # a few thousand features need the terms of those features only
            within = " AND sae::BIGINT * 4294967296 + latent BETWEEN ? AND ?"  # (sae, latent) as one number
            ends = (self.atlas.feature_at(self.rows[0]), self.atlas.feature_at(self.rows[-1]))
            keys = [sae * 4294967296 + latent for sae, latent in ends]
        terms = " INTERSECT ".join(
            f"SELECT sae, latent FROM {self.atlas.alias}.label_terms WHERE term >= ? AND term < ?{within}"
            for _ in words
        )
        self.add(
            f"((f.sae, f.latent) IN ({terms}) OR {reviewer_side})",
            *[bound for word in words for bound in (word, word + LAST_CHARACTER, *keys)],
            like,
            like,
        )

    def _starts_a_label_word(self, word: str) -> bool:
        """Whether some automatic label has a word starting with ``word``: one pruned probe, so a
        search for a word no label has does not join the label words at all."""
        row = (
            self.workspace.cursor()
            .execute(
                f"SELECT EXISTS (SELECT 1 FROM {self.atlas.alias}.label_terms WHERE term >= ? AND term < ?)",
                [word, word + LAST_CHARACTER],
            )
            .fetchone()
        )
        assert row is not None, "SELECT EXISTS always returns one row"
        return row[0]

    def _token(self, token: str) -> None:
        ids = [i for i, text in enumerate(self.atlas.token_text) if text == token]
        checks = [f"list_contains(f.{column}, ?)" for _ in ids for column in ("top_tokens", "top_logit_tokens")]
        self.add(f"({' OR '.join(checks) or 'FALSE'})", *[i for i in ids for _ in range(2)])

    def _statuses(self, wanted: set[str]) -> None:
        """A feature nobody annotated counts as 'unreviewed'."""
        marks = ", ".join("?" for _ in wanted)
        if "unreviewed" in wanted:
            self.add(f"(f.sae, f.latent) NOT IN ({self.annotated(f'n.status NOT IN ({marks})')})", *wanted)
        else:
            self.add(f"(f.sae, f.latent) IN ({self.annotated(f'n.status IN ({marks})')})", *wanted)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def feature_table(
    workspace: Workspace, atlas: Atlas, flt: FeatureFilter, sort: str, page: int, page_size: int
) -> TablePage:
    """One page of the filtered, sorted feature table and the number of features matching.

    One scan of the features' narrow columns gives both the count and the page's row ids; only
    those rows are then read whole (by rowid) and joined with their SAE and annotation."""
    query, a, order = _Query(workspace, atlas, flt), atlas.alias, SORTS[sort]
    keys = ", ".join(f"{expression} AS k{i}" for i, (expression, _) in enumerate(order))
    by_keys = ", ".join(f"k{i} {direction}" for i, (_, direction) in enumerate(order))
    cursor = workspace.cursor()
    counted = cursor.execute(
        f"WITH f AS MATERIALIZED (SELECT f.rowid AS id, {keys} FROM {a}.features f WHERE {query.where}) "
        f"SELECT (SELECT count(*) FROM f), (SELECT list(id) FROM (SELECT id FROM f ORDER BY {by_keys} LIMIT ? OFFSET ?))",
        query.params + [page_size, page * page_size],
    ).fetchone()
    assert counted is not None, "a SELECT of scalar subqueries always returns one row"
    total, ids = counted
    rows = cursor.execute(
        f"SELECT s.name AS sae_name, f.sae, f.latent, f.density, f.max_act, f.mean_act, f.label AS auto_label, "
        f"coalesce(n.status, 'unreviewed') AS status, n.label, n.tags, n.reviewer, f.top_tokens, f.top_logit_tokens "
        f"FROM {a}.features f JOIN {a}.saes s ON s.sae = f.sae LEFT JOIN {workspace.store.table('annotations')} n "
        f"ON n.sae_hash = s.content_hash AND n.latent = f.latent WHERE f.rowid = ANY(?::BIGINT[]) "
        f"ORDER BY {', '.join(f'{expression} {direction}' for expression, direction in order)}",
        [ids],
    ).df()
    rows["auto_label"] = [
        readable_label(label, _ids(firing), _ids(promoted), atlas)
        for label, firing, promoted in zip(rows["auto_label"], rows.pop("top_tokens"), rows.pop("top_logit_tokens"))
    ]
    return TablePage(rows=rows, total=int(total))


def _ids(value: object) -> list[int] | None:
    """A list of token ids as DuckDB hands it over (a list or an array; None for NULL)."""
    return [int(v) for v in value] if isinstance(value, (list, tuple, np.ndarray)) else None


@dataclass(frozen=True)
class FeatureSummary:
    density: float
    label: str  # the automatic label as shown (``readable_label``)


def feature_summaries(
    workspace: Workspace, atlas: Atlas, keys: list[tuple[int, int]]
) -> dict[tuple[int, int], FeatureSummary]:
    """Density and readable automatic label of each (sae, latent) the atlas has (by rowid: point lookups)."""
    rowids = {rowid for sae, latent in keys if (rowid := atlas.feature_rowid(sae, latent)) is not None}
    rows = _by_ids(
        workspace.cursor(),
        f"SELECT sae, latent, density, label, top_tokens, top_logit_tokens FROM {atlas.alias}.features WHERE rowid",
        rowids,
    )
    return {
        (int(sae), int(latent)): FeatureSummary(
            float(density), readable_label(label, _ids(firing), _ids(promoted), atlas)
        )
        for sae, latent, density, label, firing, promoted in rows
    }


def queue_progress(workspace: Workspace, atlas: Atlas, flt: FeatureFilter) -> tuple[int, int]:
    """(reviewed, total) over the filter, for the triage progress bar."""
    query = _Query(workspace, atlas, flt)
    reviewed = query.annotated("n.status <> 'unreviewed'")
    counts = (
        workspace.cursor()
        .execute(
            f"SELECT count(*) FILTER (WHERE (f.sae, f.latent) IN ({reviewed})), count(*) "
            f"FROM {atlas.alias}.features f WHERE {query.where}",
            query.params,
        )
        .fetchone()
    )
    assert counts is not None, "an aggregate without GROUP BY always returns one row"
    done, total = counts
    return int(done), int(total)


def next_in_queue(
    workspace: Workspace, atlas: Atlas, flt: FeatureFilter, after: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The first unreviewed feature of the filter after ``after`` in (sae, latent) order, wrapping
    round once (back to ``after`` itself); None when the whole queue is reviewed.

    The search goes through ranges of ``features`` rows nearest first (``_search_ranges``): the
    next feature is usually close, and a range of rows is a pruned scan, the label words too."""
    cursor = workspace.cursor()
    for rows in _search_ranges(atlas, flt.saes, after):
        query = _Query(workspace, atlas, flt, rows)
        reviewed = query.annotated("n.status <> 'unreviewed'")
        query.add(f"(f.sae, f.latent) NOT IN ({reviewed})")
        row = cursor.execute(
            f"SELECT f.sae, f.latent FROM {atlas.alias}.features f WHERE {query.where} ORDER BY f.rowid LIMIT 1",
            query.params,
        ).fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
    return None


def _search_ranges(atlas: Atlas, saes: tuple[int, ...], after: tuple[int, int] | None) -> list[range]:
    """Where to look in turn for the next feature after ``after`` (from the start when it is None or
    not in the atlas): the first 2,048 rows (one DuckDB vector) of the chosen SAEs (all when none
    are) after it, the rest of the rows to the end, then from the start round to ``after`` itself.
    The ranges set the order and what a scan may skip; the filter itself keeps to the chosen SAEs."""
    rowid = atlas.feature_rowid(*after) if after is not None else None
    start = 0 if rowid is None else rowid + 1
    end = sum(len(rows) for rows in atlas.feature_rows.values())
    rows_of = atlas.feature_rows
    chosen = [rows_of[sae] for sae in saes if sae in rows_of] if saes else list(rows_of.values())
    first = min((max(rows.start, start) for rows in chosen if rows.stop > start), default=end)
    near = min(first + 2048, end)
    return [rows for rows in (range(first, near), range(near, end), range(0, start)) if len(rows)]


def _float_acts(full: np.ndarray | None, half: np.ndarray | None) -> np.ndarray:
    """An example's activations as float32, whichever precision the atlas kept them in (the other
    is NULL)."""
    if full is not None:
        return np.asarray(full, dtype=np.float32)
    return np.asarray(half, dtype=np.int16).view(np.float16).astype(np.float32)


@dataclass
class FeatureView:
    """Everything the Feature page shows about one latent (plain rows: a page builds no frames it
    does not show, which keeps this within the 50 ms a page may take)."""

    sae: int
    latent: int
    stats: dict  # the features columns the pages show (STATS_COLUMNS)
    examples: list[dict]  # kind, interval_index, rank, window_id, position, value, document, act_positions, acts
    windows: dict[int, list[int]]  # window_id -> token ids
    documents: dict[int, dict]  # document -> domain, source
    neighbours: list[dict]  # scope, rank, other_sae, other_name, other_latent, cosine, other_label (readable)
    label: str  # the automatic label as shown (``readable_label``)

    def domains(self) -> pd.DataFrame:
        """How many of its examples come from each corpus domain, most first."""
        counts = Counter(self.documents[e["document"]]["domain"] for e in self.examples)
        return pd.DataFrame(counts.most_common(), columns=["domain", "examples"])


def _rows(cursor: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    result = cursor.execute(sql, params)
    names = [column[0] for column in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _by_ids(cursor: duckdb.DuckDBPyConnection, select: str, ids: set[int]) -> list[tuple]:
    """Rows whose id is in ``ids``: an IN list of parameters, which the atlas's unique index on
    that id answers with point lookups (a subquery or join would scan the table)."""
    if not ids:
        return []
    ordered = sorted(ids)
    return cursor.execute(f"{select} IN ({', '.join('?' for _ in ordered)})", ordered).fetchall()


def _examples_with_sources(workspace: Workspace, a: str, sae: int, latent: int) -> tuple[list, dict, dict]:
    """A feature's examples, then the windows and documents they refer to (by index lookups)."""
    cursor = workspace.cursor()
    examples = _rows(
        cursor,
        f"SELECT kind, interval_index, rank, window_id, position, value, document, act_positions, "
        f"act_values, act_values_f16 FROM {a}.examples WHERE sae = ? AND latent = ? "
        f"ORDER BY kind DESC, interval_index, rank",
        [sae, latent],
    )
    for example in examples:
        example["acts"] = _float_acts(example.pop("act_values"), example.pop("act_values_f16"))
    windows = dict(
        _by_ids(
            cursor, f"SELECT window_id, tokens FROM {a}.windows WHERE window_id", {e["window_id"] for e in examples}
        )
    )
    documents = {
        document: {"domain": domain, "source": source}
        for document, domain, source in _by_ids(
            cursor,
            f"SELECT document, domain, source FROM {a}.documents WHERE document",
            {e["document"] for e in examples},
        )
    }
    return examples, windows, documents


def feature_view(workspace: Workspace, atlas: Atlas, sae: int, latent: int) -> FeatureView | None:
    """The feature page's data, or None for a latent the atlas does not have.

    Its three independent parts (statistics, examples with their sources, neighbours) run on
    their own cursors at once: each waits mostly on DuckDB, which releases the GIL."""
    rowid = atlas.feature_rowid(sae, latent)
    if rowid is None:
        return None
    a = atlas.alias
    examples_part = _POOL.submit(_examples_with_sources, workspace, a, sae, latent)
    neighbours_part = _POOL.submit(
        _rows,
        workspace.cursor(),
        f"SELECT scope, rank, other_sae, other_latent, cosine, other_label "
        f"FROM {a}.neighbours WHERE sae = ? AND latent = ? ORDER BY scope DESC, rank",
        [sae, latent],
    )
    stats = _rows(workspace.cursor(), f"SELECT {STATS_COLUMNS} FROM {a}.features WHERE rowid = ?", [rowid])[0]
    examples, windows, documents = examples_part.result()
    names = dict(zip(atlas.saes["sae"], atlas.saes["name"]))
    neighbours = neighbours_part.result()
    labels = feature_summaries(workspace, atlas, [(row["other_sae"], row["other_latent"]) for row in neighbours])
    neighbours = [
        row
        | {
            "other_name": names[row["other_sae"]],
            "other_label": (
                labels[key].label if (key := (row["other_sae"], row["other_latent"])) in labels else row["other_label"]
            ),
        }
        for row in neighbours
    ]
    return FeatureView(
        sae=sae,
        latent=latent,
        stats=stats,
        examples=examples,
        windows=windows,
        documents=documents,
        neighbours=neighbours,
        label=readable_label(stats["label"], _ids(stats["top_tokens"]), _ids(stats["top_logit_tokens"]), atlas),
    )
