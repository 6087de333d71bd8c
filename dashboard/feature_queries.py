"""The SQL behind the browse and triage pages, run in DuckDB and never over all rows in pandas.

Every query takes its values as parameters; only catalog aliases (made by ``Workspace``) and
column names from fixed tables here are formatted into the SQL text. Annotations come from the
user-data file, joined on the SAE's content hash so labels follow an SAE into a rebuilt atlas.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from dashboard.userdata import STATUSES
from dashboard.workspace import Atlas, Workspace

SORTS = {
    "feature": "f.sae, f.latent",
    "density, highest first": "f.density DESC, f.sae, f.latent",
    "density, lowest first": "f.density, f.sae, f.latent",
    "max activation, highest first": "f.max_act DESC, f.sae, f.latent",
    "mean activation, highest first": "f.mean_act DESC, f.sae, f.latent",
    "recently reviewed": "n.updated_at DESC NULLS LAST, f.sae, f.latent",
}


@dataclass(frozen=True)
class FeatureFilter:
    """What the Features table and the triage queue show; every field is optional."""

    saes: tuple[int, ...] = ()
    min_density: float | None = None
    max_density: float | None = None
    min_max_act: float | None = None
    text: str = ""  # in the automatic label, the reviewer's label or the notes (case-insensitive)
    top_token: str = ""  # a token the latent fires on (automatic label) or promotes (logit effects)
    statuses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    reviewer: str = ""


@dataclass(frozen=True)
class TablePage:
    rows: pd.DataFrame
    total: int


def _from(workspace: Workspace, atlas: Atlas) -> str:
    a = atlas.alias
    return (f"FROM {a}.features f JOIN {a}.saes s ON s.sae = f.sae LEFT JOIN {workspace.store.table('annotations')} n "
            f"ON n.sae_hash = s.content_hash AND n.latent = f.latent")


def _where(atlas: Atlas, flt: FeatureFilter) -> tuple[str, list]:
    clauses, params = ["TRUE"], []
    if flt.saes:
        clauses.append(f"f.sae IN ({', '.join('?' for _ in flt.saes)})")
        params += list(flt.saes)
    for column, op, value in (("f.density", ">=", flt.min_density), ("f.density", "<=", flt.max_density),
                              ("f.max_act", ">=", flt.min_max_act)):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    if flt.text.strip():
        clauses.append("(f.label ILIKE ? OR n.label ILIKE ? OR n.notes ILIKE ?)")
        params += [f"%{_like_escape(flt.text.strip())}%"] * 3
    if flt.top_token:
        clauses.append(f"(f.label ILIKE ? OR list_has_any(f.top_logit_tokens, "
                       f"(SELECT list(token) FROM {atlas.alias}.tokens WHERE text = ?)))")
        params += [f"%'{_like_escape(flt.top_token)}'%", flt.top_token]
    if flt.statuses:
        clauses.append(f"coalesce(n.status, 'unreviewed') IN ({', '.join('?' for _ in flt.statuses)})")
        params += list(flt.statuses)
    if flt.tags:
        clauses.append("list_has_any(n.tags, ?::VARCHAR[])")
        params.append(list(flt.tags))
    if flt.reviewer.strip():
        clauses.append("n.reviewer = ?")
        params.append(flt.reviewer.strip())
    return " AND ".join(clauses), params


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def feature_table(workspace: Workspace, atlas: Atlas, flt: FeatureFilter, sort: str, page: int,
                  page_size: int) -> TablePage:
    """One page of the filtered, sorted feature table and the number of features matching."""
    where, params = _where(atlas, flt)
    cursor = workspace.cursor()
    total = cursor.execute(f"SELECT count(*) {_from(workspace, atlas)} WHERE {where}", params).fetchone()[0]
    rows = cursor.execute(
        f"SELECT s.name AS sae_name, f.sae, f.latent, f.density, f.max_act, f.mean_act, f.label AS auto_label, "
        f"coalesce(n.status, 'unreviewed') AS status, n.label, n.tags, n.reviewer {_from(workspace, atlas)} WHERE {where} "
        f"ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?", params + [page_size, page * page_size]).df()
    return TablePage(rows=rows, total=int(total))


def queue_progress(workspace: Workspace, atlas: Atlas, flt: FeatureFilter) -> tuple[int, int]:
    """(reviewed, total) over the filter, for the triage progress bar."""
    where, params = _where(atlas, flt)
    cursor = workspace.cursor()
    reviewed, total = cursor.execute(
        f"SELECT count(*) FILTER (WHERE coalesce(n.status, 'unreviewed') <> 'unreviewed'), count(*) "
        f"{_from(workspace, atlas)} WHERE {where}", params).fetchone()
    return int(reviewed), int(total)


def next_in_queue(workspace: Workspace, atlas: Atlas, flt: FeatureFilter,
                  after: tuple[int, int] | None) -> tuple[int, int] | None:
    """The first unreviewed feature of the filter after ``after`` in (sae, latent) order, wrapping
    round once; None when the whole queue is reviewed."""
    where, params = _where(atlas, flt)
    cursor = workspace.cursor()
    unreviewed = f"{where} AND coalesce(n.status, 'unreviewed') = 'unreviewed'"
    query = f"SELECT f.sae, f.latent {_from(workspace, atlas)} WHERE {unreviewed} AND (f.sae, f.latent) > (?, ?) " \
            f"ORDER BY f.sae, f.latent LIMIT 1"
    start = after if after is not None else (-1, -1)
    row = cursor.execute(query, params + list(start)).fetchone()
    if row is None and after is not None:
        row = cursor.execute(query, params + [-1, -1]).fetchone()
    return (int(row[0]), int(row[1])) if row else None


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
    stats: dict  # the features row
    examples: list[dict]  # kind, interval_index, rank, window_id, position, value, document, act_positions, acts
    windows: dict[int, list[int]]  # window_id -> token ids
    documents: dict[int, dict]  # document -> doc_id, domain, source
    neighbours: list[dict]  # scope, rank, other_sae, other_name, other_latent, cosine, other_label

    def domains(self) -> pd.DataFrame:
        """How many of its examples come from each corpus domain, most first."""
        counts = Counter(self.documents[e["document"]]["domain"] for e in self.examples)
        return pd.DataFrame(counts.most_common(), columns=["domain", "examples"])


def _rows(cursor: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    result = cursor.execute(sql, params)
    names = [column[0] for column in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def feature_view(workspace: Workspace, atlas: Atlas, sae: int, latent: int) -> FeatureView | None:
    """The feature page's data, or None for a latent the atlas does not have."""
    a, cursor = atlas.alias, workspace.cursor()
    stats = _rows(cursor, f"SELECT * FROM {a}.features WHERE sae = ? AND latent = ?", [sae, latent])
    if not stats:
        return None
    examples = _rows(cursor, f"SELECT kind, interval_index, rank, window_id, position, value, document, act_positions, "
                             f"act_values, act_values_f16 FROM {a}.examples WHERE sae = ? AND latent = ? "
                             f"ORDER BY kind DESC, interval_index, rank", [sae, latent])
    for example in examples:
        example["acts"] = _float_acts(example.pop("act_values"), example.pop("act_values_f16"))
    window_ids = sorted({e["window_id"] for e in examples})
    windows = dict(cursor.execute(
        f"SELECT window_id, tokens FROM {a}.windows WHERE window_id IN (SELECT unnest(?::BIGINT[]))",
        [window_ids]).fetchall()) if window_ids else {}
    document_ids = sorted({e["document"] for e in examples})
    documents = {row.pop("document"): row for row in _rows(
        cursor, f"SELECT document, doc_id, domain, source FROM {a}.documents "
                f"WHERE document IN (SELECT unnest(?::INTEGER[]))", [document_ids])} if document_ids else {}
    neighbours = _rows(
        cursor, f"SELECT g.scope, g.rank, g.other_sae, s.name AS other_name, g.other_latent, g.cosine, "
                f"o.label AS other_label FROM {a}.neighbours g JOIN {a}.saes s ON s.sae = g.other_sae "
                f"JOIN {a}.features o ON o.sae = g.other_sae AND o.latent = g.other_latent "
                f"WHERE g.sae = ? AND g.latent = ? ORDER BY g.scope DESC, g.rank", [sae, latent])
    return FeatureView(sae=sae, latent=latent, stats=stats[0], examples=examples, windows=windows,
                       documents=documents, neighbours=neighbours)
