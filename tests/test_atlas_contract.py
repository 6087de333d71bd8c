"""The declared atlas contract: docs/SCHEMA.md generated from it, the committed demo atlas equal to
it, and the reader's migrations applied (or an old atlas refused) on real DuckDB files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from analysis.atlas import contract
from analysis.atlas.contract import SCHEMA_VERSION, Migration
from analysis.atlas.reader import AtlasError, open_atlas, read_meta
from analysis.paths import DEMO_ATLAS, REPO_ROOT

SCHEMA_DOC = REPO_ROOT / "docs" / "SCHEMA.md"


def contract_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis.atlas.contract", *args], cwd=REPO_ROOT, capture_output=True, text=True
    )


def test_schema_doc_is_generated_from_the_contract():
    result = contract_command("--check", str(SCHEMA_DOC))
    assert result.returncode == 0, result.stderr


def test_a_stale_schema_doc_fails_the_check_until_rewritten(tmp_path):
    stale = tmp_path / "SCHEMA.md"
    stale.write_text(SCHEMA_DOC.read_text().replace("| density | DOUBLE |", "| density | FLOAT |"))
    result = contract_command("--check", str(stale))
    assert result.returncode == 1
    assert result.stderr.strip() == f"{stale} is out of date: run python -m analysis.atlas.contract --write {stale}"
    assert contract_command("--write", str(stale)).returncode == 0
    assert stale.read_text() == SCHEMA_DOC.read_text()


def test_a_document_without_the_marks_is_one_line_and_exit_2(tmp_path):
    plain = tmp_path / "plain.md"
    plain.write_text("# no marks here\n")
    result = contract_command("--check", str(plain))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "lacks the marks" in result.stderr


def test_the_demo_atlas_has_exactly_the_declared_tables_and_types():
    connection = open_atlas(DEMO_ATLAS)
    try:
        context = read_meta(connection)["context"]
        for table in contract.TABLES:
            described = [(name, type_) for name, type_, *_ in connection.execute(f"DESCRIBE {table.name}").fetchall()]
            declared = [(c.name, c.type.format(context=context)) for c in table.columns]
            assert described == declared, table.name
        indexes = connection.execute("SELECT sql FROM duckdb_indexes() ORDER BY index_name").fetchall()
        assert len(indexes) == len(contract.INDEXES)
    finally:
        connection.close()


@pytest.fixture
def version_2_atlas(tmp_path) -> Path:
    """A copy of the demo atlas as version 2 would have it: no ``label_terms``, version 2 in meta."""
    path = tmp_path / "old.duckdb"
    shutil.copyfile(DEMO_ATLAS, path)
    connection = duckdb.connect(str(path))
    try:
        connection.execute("DROP TABLE label_terms")
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    finally:
        connection.close()
    return path


def test_an_old_atlas_without_a_migration_is_refused_in_one_line(version_2_atlas):
    with pytest.raises(AtlasError) as refused:
        open_atlas(version_2_atlas)
    message = str(refused.value)
    assert "\n" not in message and "schema version 2" in message and "Rebuild it" in message
    connection = duckdb.connect(str(version_2_atlas), read_only=True)  # left as it was
    try:
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("2",)]
    finally:
        connection.close()


def test_an_old_atlas_is_migrated_in_place_when_a_migration_leads_to_this_version(version_2_atlas):
    label_terms = Migration(
        SCHEMA_VERSION - 1, (contract.LABEL_TERMS.create(context=0), contract.FILL_LABEL_TERMS), "label_terms"
    )
    connection = open_atlas(version_2_atlas, migrations=(label_terms,))
    try:
        assert read_meta(connection)["schema_version"] == SCHEMA_VERSION
        migrated = connection.execute("SELECT * FROM label_terms ORDER BY rowid").fetchall()
    finally:
        connection.close()
    demo = open_atlas(DEMO_ATLAS)
    try:
        assert migrated == demo.execute("SELECT * FROM label_terms ORDER BY rowid").fetchall()
    finally:
        demo.close()
    open_atlas(version_2_atlas).close()  # now current: opens with no migration at all


def test_a_failing_migration_leaves_the_file_untouched(version_2_atlas):
    broken = Migration(SCHEMA_VERSION - 1, ("CREATE TABLE label_terms (term VARCHAR)", "SELECT no_such_column"), "x")
    with pytest.raises(AtlasError, match="could not migrate"):
        open_atlas(version_2_atlas, migrations=(broken,))
    connection = duckdb.connect(str(version_2_atlas), read_only=True)
    try:
        tables = {row[0] for row in connection.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert "label_terms" not in tables
        assert connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("2",)]
    finally:
        connection.close()


def test_a_newer_atlas_is_refused_with_a_hint_to_upgrade(tmp_path):
    path = tmp_path / "newer.duckdb"
    connection = duckdb.connect(str(path))
    connection.execute(contract.META.create(context=0))
    connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", [json.dumps(SCHEMA_VERSION + 1)])
    connection.close()
    with pytest.raises(AtlasError, match="Upgrade SAEscope"):
        open_atlas(path)
