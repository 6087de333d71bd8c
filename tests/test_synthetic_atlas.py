"""bench/synthetic_atlas.py: a tiny synthetic atlas has the real atlas's schema, orders and macros."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from analysis.atlas.contract import SCHEMA_VERSION, TABLE_NAMES
from analysis.atlas.reader import open_atlas, read_meta
from analysis.paths import DEMO_DIR
from bench.synthetic_atlas import ORDER_KEYS, build_synthetic_atlas, order_violations, schema_differences

REFERENCE = DEMO_DIR / "atlas.duckdb"
SAES, LATENTS, PER_LATENT = 2, 1000, 30


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("synthetic") / "atlas.duckdb"
    return path, build_synthetic_atlas(
        path,
        saes=SAES,
        latents=LATENTS,
        examples_per_latent=PER_LATENT,
        context=128,
        vocab=50257,
        seed=0,
        reference=REFERENCE,
    )


@pytest.fixture()
def atlas(built) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_atlas(built[0])
    yield connection
    connection.close()


def test_row_counts(built):
    rows = built[1]["rows"]
    assert rows["saes"] == SAES and rows["features"] == LATENTS and rows["tokens"] == 50257
    assert rows["neighbours"] == LATENTS * 20
    assert abs(rows["examples"] / (LATENTS * PER_LATENT) - 1) < 0.1
    assert not built[0].with_name(built[0].name + ".tmp").exists()


def test_meta_is_a_real_run_description(atlas):
    meta = read_meta(atlas)
    assert meta["schema_version"] == SCHEMA_VERSION and meta["top_k"] == 20 and meta["context"] == 128
    assert [s["d_sae"] for s in meta["saes"]] == [LATENTS // SAES] * SAES
    assert len({s["content_hash"] for s in meta["saes"]}) == SAES


def test_schema_equals_the_reference_atlas(atlas):
    reference = open_atlas(REFERENCE)
    try:
        assert schema_differences(atlas, reference) == []
        assert {table: atlas.execute(f"DESCRIBE {table}").fetchall() for table in TABLE_NAMES} == {
            table: reference.execute(f"DESCRIBE {table}").fetchall() for table in TABLE_NAMES
        }
    finally:
        reference.close()


def test_neighbours_and_label_terms_are_made_by_the_real_writer(atlas):
    assert (
        atlas.execute("""
        SELECT count(*) FROM neighbours g JOIN features f ON f.sae = g.other_sae AND f.latent = g.other_latent
        WHERE g.other_label <> f.label""").fetchone()[0]
        == 0
    )
    labelled = atlas.execute("SELECT count(*) FROM features WHERE len(top_tokens) BETWEEN 1 AND 3").fetchone()[0]
    assert labelled == atlas.execute("SELECT count(*) FROM features WHERE fire_count > 0").fetchone()[0]
    assert atlas.execute("SELECT count(DISTINCT (sae, latent)) FROM label_terms").fetchone()[0] == labelled


@pytest.mark.parametrize("table", sorted(ORDER_KEYS))
def test_tables_are_in_primary_order(atlas, table):
    assert order_violations(atlas, table) == 0


def test_example_acts_reads_both_kinds(atlas):
    rows = atlas.execute("""
        SELECT kind, typeof(example_acts(act_values, act_values_f16)) AS type,
               bool_and(len(example_acts(act_values, act_values_f16)) = len(act_positions)) AS same_length,
               bool_and((act_values IS NULL) = (kind = 'interval') AND (act_values_f16 IS NULL) = (kind = 'top')),
               max(abs(example_acts(act_values, act_values_f16)[list_position(act_positions, position)] - value)
                   / value)
        FROM examples GROUP BY ALL ORDER BY kind
    """).fetchall()
    assert [row[:4] for row in rows] == [("interval", "FLOAT[]", True, True), ("top", "FLOAT[]", True, True)]
    assert rows[0][4] < 1e-3 and rows[1][4] == 0


def test_examples_agree_with_features_and_refer_to_existing_rows(atlas):
    assert atlas.execute("""
        SELECT count(*) FROM examples e LEFT JOIN windows w USING (window_id) LEFT JOIN documents d USING (document)
        WHERE w.window_id IS NULL OR d.document IS NULL OR NOT list_contains(act_positions, position)
           OR act_positions <> list_sort(list_distinct(act_positions)) OR position < 1 OR position >= 128
    """).fetchall() == [(0,)]
    assert atlas.execute("""
        SELECT count(*) FROM features f LEFT JOIN (
            SELECT sae, latent, count(*) FILTER (kind = 'top') AS top, count(*) FILTER (kind = 'interval') AS samples
            FROM examples GROUP BY ALL) e USING (sae, latent)
        WHERE fire_count <> list_sum(hist) OR fire_count <> list_sum(log_hist) OR fire_count <> list_sum(interval_count)
           OR coalesce(top, 0) <> least(20, fire_count)
           OR coalesce(samples, 0) <> list_sum(list_transform(interval_count, lambda c: least(5, c)))
    """).fetchall() == [(0,)]
    dead = atlas.execute("SELECT count(*) FROM features WHERE fire_count = 0").fetchall()[0][0]
    assert 0 < dead < LATENTS * 0.1
