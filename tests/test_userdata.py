"""The user-data store: what reviewers write (annotations, tags, lists) and its audit log.

Real DuckDB files in tmp_path, no mocks. Everything is fast except the concurrency test, which
runs simulated sessions for CONCURRENCY_SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import duckdb
import pandas as pd
import pytest

from analysis.paths import REPO_ROOT
from dashboard.userdata import (
    FIELDS,
    SCHEMA_VERSION,
    SEED_TAGS,
    STATUSES,
    ReadOnlyError,
    UserDataError,
    UserStore,
    open_user_store,
)

CONCURRENCY_SECONDS = 30.0

SAE_A = "a" * 64  # SAE weight content hashes, as an atlas records them
SAE_B = "b" * 64


@pytest.fixture
def store(tmp_path):
    store = open_user_store(tmp_path / "users" / "saescope-user.duckdb")  # parent folder does not exist yet
    yield store
    store.close()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (its own DuckDB instance) with the repository importable."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=120
    )


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- labelling, history, undo ---------------------------------------------------------------


def test_a_feature_nobody_touched_reads_as_unreviewed(store):
    annotation = store.annotation(SAE_A, 7)
    assert (annotation.status, annotation.label, annotation.tags, annotation.confidence) == ("unreviewed", "", (), None)
    assert not annotation.reviewed
    assert store.history(SAE_A, 7).empty


def test_label_a_feature_and_read_back_its_history(store):
    store.annotate(
        SAE_A,
        "layer0-resid",
        7,
        "alice",
        status="interpretable",
        label="French articles",
        tags=["PII", "bias "],
        confidence="medium",
    )
    store.annotate(SAE_A, "layer0-resid", 7, "alice", label="French definite articles", notes="le/la/les")

    annotation = store.annotation(SAE_A, 7)
    assert annotation.status == "interpretable" and annotation.reviewed
    assert annotation.label == "French definite articles"
    assert annotation.tags == ("bias", "pii")  # normalised, sorted
    assert annotation.confidence == "medium" and annotation.notes == "le/la/les"
    assert annotation.reviewer == "alice" and annotation.sae_name == "layer0-resid"

    history = store.history(SAE_A, 7)  # newest first, one row per changed field
    rows = [(row.field, row.old_value, row.new_value) for row in history.itertuples()]
    assert rows == [
        ("notes", "", "le/la/les"),
        ("label", "French articles", "French definite articles"),
        ("confidence", None, "medium"),
        ("tags", "[]", '["bias", "pii"]'),
        ("label", "", "French articles"),
        ("status", "unreviewed", "interpretable"),
    ]
    assert set(history["action"]) == {"edit"} and set(history["reviewer"]) == {"alice"}
    assert history["edit_id"].nunique() == 2  # one group per save
    assert str(history["changed_at"].dt.tz) == "UTC"


def test_only_the_fields_given_change_and_unchanged_values_are_not_logged(store):
    store.annotate(SAE_A, "s", 1, "alice", status="polysemantic", label="x")
    after = store.annotate(SAE_A, "s", 1, "bob", status="polysemantic", confidence="high")
    assert (after.status, after.label, after.confidence) == ("polysemantic", "x", "high")
    assert list(store.history(SAE_A, 1)["field"]) == ["confidence", "label", "status"]
    assert store.annotate(SAE_A, "s", 1, "bob", label="x") == after  # nothing changed: nothing written
    assert len(store.audit_frame()) == 3
    assert store.annotate(SAE_A, None, 1, "bob", notes="n").sae_name == "s"  # a known SAE name is kept


def test_undo_restores_the_previous_values_and_never_undoes_a_save_twice(store):
    store.annotate(SAE_A, "s", 3, "alice", status="interpretable", label="cats")
    store.annotate(SAE_A, "s", 3, "alice", label="felines", tags=["bias"])

    undone = store.undo(SAE_A, 3, "alice")  # reverts the second save only
    assert (undone.status, undone.label, undone.tags) == ("interpretable", "cats", ())
    undone = store.undo(SAE_A, 3, "alice")  # then the first
    assert (undone.status, undone.label) == ("unreviewed", "")
    assert store.undo(SAE_A, 3, "alice") is None  # nothing left: the same save is not undone again
    assert store.annotation(SAE_A, 3).label == ""

    history = store.history(SAE_A, 3)
    undo_rows = history[history["action"] == "undo"]
    assert undo_rows["undoes"].nunique() == 2 and undo_rows["edit_id"].nunique() == 2
    assert ("label", "felines", "cats") in {(r.field, r.old_value, r.new_value) for r in undo_rows.itertuples()}


def test_undo_does_not_undo_another_reviewers_edit(store):
    store.annotate(SAE_A, "s", 4, "alice", status="interpretable", label="cats")
    store.annotate(SAE_A, "s", 4, "bob", label="dogs", confidence="low")

    after = store.undo(SAE_A, 4, "alice")  # alice's last save; bob has changed its label since
    assert after.status == "unreviewed"  # alice's own change is reverted
    assert (after.label, after.confidence) == ("dogs", "low")  # bob's edits stand
    assert store.undo(SAE_A, 4, "carol") is None  # carol never edited it

    after = store.undo(SAE_A, 4, "bob")  # bob's undo: back to what he saw before his save
    assert (after.status, after.label, after.confidence) == ("unreviewed", "cats", None)
    assert store.undo(SAE_A, 4, "alice") is None


def test_undo_of_a_save_whose_every_field_was_changed_since_is_recorded_and_consumed(store):
    store.annotate(SAE_A, "s", 5, "alice", label="one")
    store.annotate(SAE_A, "s", 5, "alice", label="two")
    store.annotate(SAE_A, "s", 5, "bob", label="three")
    assert store.undo(SAE_A, 5, "alice").label == "three"  # 'two' was overwritten: nothing to restore
    assert store.undo(SAE_A, 5, "alice").label == "three"  # 'one' too
    assert store.undo(SAE_A, 5, "alice") is None
    markers = store.history(SAE_A, 5).query("action == 'undo'")
    assert len(markers) == 2 and markers["field"].isna().all()


# --- persistence and locking -----------------------------------------------------------------


READ_BACK = """
import json, sys
from dashboard.userdata import open_user_store
store = open_user_store(sys.argv[1], read_only=True)
a = store.annotation(sys.argv[2], int(sys.argv[3]))
print(json.dumps({"status": a.status, "label": a.label, "tags": list(a.tags), "notes": a.notes,
                  "audit_rows": len(store.audit_frame()), "lists": list(store.lists()["name"]),
                  "torch_imported": "torch" in sys.modules}))
"""


def test_data_survives_reopening_in_a_fresh_process(tmp_path):
    path = tmp_path / "saescope-user.duckdb"
    store = open_user_store(path)
    store.annotate(SAE_A, "s", 9, "alice", status="dead", label="never fires", tags=["refusal"], notes="line1\nline2")
    store.create_list("to check", "alice")
    store.close()  # releases the file lock

    result = run_python(READ_BACK, str(path), SAE_A, "9")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": "dead",
        "label": "never fires",
        "tags": ["refusal"],
        "notes": "line1\nline2",
        "audit_rows": 5,
        "lists": ["to check"],
        "torch_imported": False,
    }  # the store stays torch-free


def test_a_second_server_on_the_same_file_gets_a_clear_message(store):
    store.annotate(SAE_A, "s", 1, "alice", label="held")
    result = run_python(
        "import sys\nfrom dashboard.userdata import open_user_store, UserDataError\n"
        "try:\n    open_user_store(sys.argv[1])\nexcept UserDataError as e:\n    print(e)\n",
        str(store.path),
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    message = result.stdout.strip()
    assert "\n" not in message and str(store.path) in message
    assert "another SAEscope server holds" in message and f"PID {os.getpid()}" in message


def test_open_user_store_gives_one_store_per_file(store, tmp_path):
    assert open_user_store(store.path) is store
    assert open_user_store(str(store.path.parent / ".." / "users" / store.path.name)) is store
    view = open_user_store(store.path, read_only=True)
    assert view is not store and view.connection is store.connection  # one DuckDB instance per file


# --- bad input, read-only mode, foreign files -------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(reviewer="   ", label="x"), "reviewer name is required"),
        (dict(reviewer="", label="x"), "reviewer name is required"),
        (dict(reviewer="alice", status="great"), "unknown status 'great'"),
        (dict(reviewer="alice", status="interpretable", tags=["pii", "secret-stuff"]), "unknown tag(s) secret-stuff"),
        (dict(reviewer="alice", tags="pii"), "not a single string"),
        (dict(reviewer="alice", tags=["no/slashes"]), "not a valid tag"),
        (dict(reviewer="alice", label="x" * 501), "the limit is 500"),
        (dict(reviewer="alice", notes="x" * 5001), "the limit is 5000"),
        (dict(reviewer="alice", confidence="certain"), "unknown confidence 'certain'"),
        (dict(reviewer="alice", label="\ud800"), "not valid Unicode"),
        (dict(reviewer="alice", label=42), "must be text"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(store, kwargs, message):
    store.annotate(SAE_A, "s", 2, "bob", label="before")
    audit_before = store.audit_frame()
    with pytest.raises(UserDataError) as error:
        store.annotate(SAE_A, "s", 2, **kwargs)
    assert message in str(error.value)
    assert store.audit_frame().equals(audit_before)
    assert store.annotation(SAE_A, 2).label == "before"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.annotation(SAE_A, -1),
        lambda s: s.annotation(SAE_A, True),
        lambda s: s.annotation("", 1),
        lambda s: s.add_tag("", "alice"),
        lambda s: s.add_tag("bad tag!", "alice"),
        lambda s: s.add_tag("pii", " "),
        lambda s: s.create_list("  ", "alice"),
        lambda s: s.add_to_list("no such list", SAE_A, "s", 1, "alice"),
        lambda s: s.list_items("no such list"),
    ],
)
def test_other_bad_calls_raise_user_data_errors(store, call):
    with pytest.raises(UserDataError):
        call(store)
    assert store.audit_frame().empty


def every_write(store: UserStore) -> list:
    return [
        lambda: store.annotate(SAE_A, "s", 1, "mallory", label="changed"),
        lambda: store.annotate(SAE_A, "s", 1, "mallory"),  # even a save that would change nothing
        lambda: store.undo(SAE_A, 1, "alice"),
        lambda: store.add_tag("new-tag", "mallory"),
        lambda: store.create_list("another", "mallory"),
        lambda: store.add_to_list("kept", SAE_A, "s", 2, "mallory"),
        lambda: store.remove_from_list("kept", SAE_A, 1, "mallory"),
        lambda: store.delete_experiment("any-id", "mallory"),
    ]


def test_a_read_only_store_refuses_every_write_and_writes_nothing(tmp_path):
    path = tmp_path / "saescope-user.duckdb"
    writer = open_user_store(path)
    writer.annotate(SAE_A, "s", 1, "alice", label="original")
    writer.create_list("kept", "alice")
    writer.add_to_list("kept", SAE_A, "s", 1, "alice")

    shared = open_user_store(path, read_only=True)  # same process as a writer: shares its instance
    audit_before = writer.audit_frame()
    for write in every_write(shared):
        with pytest.raises(ReadOnlyError, match="SAEscope is in read-only mode"):
            write()
    assert writer.audit_frame().equals(audit_before)
    writer.close()

    digest = file_digest(path)
    reader = open_user_store(path, read_only=True)  # alone: DuckDB opens the file read-only
    assert reader.annotation(SAE_A, 1).label == "original"
    for write in every_write(reader):
        with pytest.raises(ReadOnlyError):
            write()
    assert reader.list_items("kept")["latent"].tolist() == [1]
    reader.close()
    assert file_digest(path) == digest


def test_read_only_mode_without_a_file_reads_empty_and_creates_nothing(tmp_path):
    path = tmp_path / "nothing-yet" / "saescope-user.duckdb"
    reader = open_user_store(path, read_only=True)
    try:
        assert reader.annotation(SAE_A, 1).status == "unreviewed"
        assert reader.tags() == sorted(SEED_TAGS) and reader.lists().empty
        with pytest.raises(ReadOnlyError):
            reader.annotate(SAE_A, "s", 1, "alice", label="x")
    finally:
        reader.close()
    assert not path.parent.exists()


def test_a_file_from_a_newer_saescope_is_refused(tmp_path):
    path = tmp_path / "newer.duckdb"
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE user_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        connection.execute("INSERT INTO user_meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION + 1)])
    for read_only in (False, True):
        with pytest.raises(UserDataError, match=f"newer SAEscope .*version {SCHEMA_VERSION + 1}"):
            open_user_store(path, read_only=read_only)
    with duckdb.connect(str(path)) as connection:
        connection.execute("DROP TABLE user_meta")
    open_user_store(path).close()


def test_a_corrupt_file_or_an_atlas_is_refused_with_a_user_data_error(tmp_path):
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(random.Random(0).randbytes(64 * 1024))
    with pytest.raises(UserDataError, match="not a DuckDB file"):
        open_user_store(corrupt)
    assert corrupt.stat().st_size == 64 * 1024  # left as it was

    truncated = tmp_path / "truncated.duckdb"  # a real store cut short (a copy interrupted, a full disk)
    store = open_user_store(truncated)
    for latent in range(10):
        store.annotate(SAE_A, "s", latent, "alice", notes="x" * 5000)
    store.close()
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    with pytest.raises(UserDataError, match="truncated"):
        open_user_store(truncated)

    atlas = tmp_path / "atlas.duckdb"
    with duckdb.connect(str(atlas)) as connection:
        connection.execute("CREATE TABLE meta (key VARCHAR, value VARCHAR)")
    with pytest.raises(UserDataError, match="not a SAEscope user-data file"):
        open_user_store(atlas)


# --- text is data ------------------------------------------------------------------------------


HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "'; DROP TABLE annotations; --",
    "quotes \" ' ` and backslashes \\ \\\\ $1 ? %s {0}",
    "control \x00 \x01 \x07 \x1b[31m \x7f\r\n\ttabs",
    "unicode: é 中文 🙂 \u202e right-to-left \ufeff bom \u200b",
]


def test_hostile_text_round_trips_byte_exact(tmp_path):
    path = tmp_path / "saescope-user.duckdb"
    store = open_user_store(path)
    for latent, text in enumerate(HOSTILE):
        store.annotate(SAE_A, text[:40], latent, "o'brien <b>", label=text, notes=text * 3)
        name = f"list {latent}: " + re.sub(r"[\x00-\x1f\x7f]", "", text)  # names refuse control characters
        store.create_list(name, "o'brien <b>", description=text)
    store.create_list("mixed", "alice")
    for latent, text in enumerate(HOSTILE):
        store.add_to_list("mixed", SAE_A, text, latent, "alice", note=text)
    store.close()

    store = open_user_store(path)  # read back from disk, not from a cache
    try:
        for latent, text in enumerate(HOSTILE):
            annotation = store.annotation(SAE_A, latent)
            assert annotation.label == text and annotation.notes == text * 3 and annotation.sae_name == text[:40]
            assert annotation.reviewer == "o'brien <b>"
            history = store.history(SAE_A, latent)
            assert history.set_index("field").loc["label", "new_value"] == text
        assert sorted(store.lists()["description"].tolist()) == sorted(HOSTILE + [""])
        assert len(set(store.lists()["name"])) == len(HOSTILE) + 1
        assert store.list_items("mixed")["note"].tolist() == HOSTILE
        assert set(store.annotations_frame()["label"]) == set(HOSTILE)
        assert {"annotations", "audit", "lists"} <= {
            row[0] for row in store.connection.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
    finally:
        store.close()


# --- tags, lists, progress ------------------------------------------------------------------------


def test_tag_vocabulary_is_seeded_and_grows_with_normalised_audited_tags(store):
    assert store.tags() == sorted(SEED_TAGS)
    assert store.connection.execute(f"SELECT DISTINCT added_by FROM {store.table('tag_vocabulary')}").fetchall() == [
        ("saescope",)
    ]
    assert store.add_tag("  Sycophancy  Bait ", "alice") == "sycophancy-bait"
    assert store.add_tag("SYCOPHANCY-bait", "bob") == "sycophancy-bait"  # already there: not logged again
    assert "sycophancy-bait" in store.tags()
    audit = store.audit_frame()
    assert audit[["action", "reviewer", "new_value"]].values.tolist() == [["tag_added", "alice", "sycophancy-bait"]]
    assert store.annotate(SAE_A, "s", 1, "bob", tags=["Sycophancy Bait"]).tags == ("sycophancy-bait",)


def test_lists_hold_features_with_notes_and_log_every_change(store):
    store.create_list("deception candidates", "alice", description="for the safety review")
    with pytest.raises(UserDataError, match="already exists"):
        store.create_list("deception candidates", "bob")
    store.add_to_list("deception candidates", SAE_A, "layer0", 10, "alice", note="strong on lies")
    store.add_to_list("deception candidates", SAE_B, "layer1", 11, "bob")
    item = store.add_to_list("deception candidates", SAE_A, "layer0", 10, "bob", note="also sarcasm")  # note upsert
    assert (item.note, item.added_by) == ("also sarcasm", "alice")
    store.annotate(SAE_A, "layer0", 10, "alice", status="interpretable", label="lying")

    lists = store.lists()
    assert lists[["name", "description", "created_by", "items"]].values.tolist() == [
        ["deception candidates", "for the safety review", "alice", 2]
    ]
    exported = store.list_frame("deception candidates")
    assert exported[["latent", "note", "status", "label"]].values.tolist() == [
        [10, "also sarcasm", "interpretable", "lying"],
        [11, "", "unreviewed", ""],
    ]

    assert store.remove_from_list("deception candidates", SAE_B, 11, "alice") is True
    assert store.remove_from_list("deception candidates", SAE_B, 11, "alice") is False
    assert store.list_items("deception candidates")["latent"].tolist() == [10]
    list_actions = store.audit_frame().query("list_name == 'deception candidates'")["action"].tolist()
    assert list_actions == ["list_create", "list_add", "list_add", "list_note", "list_remove"]


def test_reviewed_counts_per_sae_for_progress_bars(store):
    store.annotate(SAE_A, "s", 1, "alice", status="interpretable")
    store.annotate(SAE_A, "s", 2, "alice", status="dead")
    store.annotate(SAE_A, "s", 3, "alice", label="not reviewed yet")  # a label alone is not a review
    store.annotate(SAE_B, "t", 1, "alice", status="polysemantic")
    assert store.reviewed_counts([SAE_A, SAE_B, "c" * 64]) == {SAE_A: 2, SAE_B: 1, "c" * 64: 0}
    assert len(store.annotations_frame([SAE_B])) == 1 and len(store.annotations_frame()) == 4


def make_atlas(path: Path, hashes: list[str], latents: int) -> None:
    """A stand-in for an atlas: its saes(content_hash) and features tables are all the joins need."""
    with duckdb.connect(str(path)) as connection:
        connection.execute("CREATE TABLE saes (sae INTEGER, name VARCHAR, content_hash VARCHAR)")
        connection.executemany("INSERT INTO saes VALUES (?, ?, ?)", [(i, f"sae{i}", h) for i, h in enumerate(hashes)])
        connection.execute("CREATE TABLE features AS SELECT s.sae, l.latent FROM saes s, range(?) l(latent)", [latents])
        connection.execute("CREATE TABLE annotations (nonsense INTEGER)")  # same name as ours: must not matter


def test_atlases_attached_to_the_connection_join_with_annotations(store, tmp_path):
    make_atlas(tmp_path / "atlas.duckdb", [SAE_A, SAE_B], 5)
    store.annotate(SAE_A, "sae0", 3, "alice", status="interpretable", tags=["pii"], label="emails")
    store.annotate(SAE_B, "sae1", 0, "bob", status="dead")
    store.connection.execute(f"ATTACH '{tmp_path / 'atlas.duckdb'}' AS atlas (READ_ONLY)")
    store.connection.execute("USE atlas")  # even with the atlas as the default catalog
    rows = store.connection.execute(
        f"""
        SELECT s.name, f.latent, a.label FROM atlas.features f JOIN atlas.saes s USING (sae)
        JOIN {store.table("annotations")} a ON a.sae_hash = s.content_hash AND a.latent = f.latent
        WHERE list_contains(a.tags, ?) OR a.reviewer = ? ORDER BY s.name""",
        ["pii", "bob"],
    ).fetchall()
    assert rows == [("sae0", 3, "emails"), ("sae1", 0, "")]
    store.annotate(SAE_A, "sae0", 4, "alice", label="still writes")
    assert store.annotation(SAE_A, 4).label == "still writes" and store.undo(SAE_A, 4, "alice").label == ""
    assert len(store.annotations_frame()) == 3


def test_a_write_that_keeps_conflicting_gives_up_with_a_clear_message(store, monkeypatch):
    import dashboard.userdata.transactions as userdata

    monkeypatch.setattr(userdata, "MAX_ATTEMPTS", 4)  # the real bound takes seconds to exhaust
    store.annotate(SAE_A, "s", 1, "alice", label="before")
    audit_before = store.audit_frame()
    other_session = store.connection.cursor()
    other_session.execute("BEGIN TRANSACTION")  # holds an uncommitted change to the row, as a save does
    other_session.execute(f"DELETE FROM {store.table('annotations')} WHERE latent = 1")
    with pytest.raises(UserDataError, match="other sessions kept changing the same data .*4 attempts"):
        store.annotate(SAE_A, "s", 1, "bob", label="after")
    assert store.retries == 3
    other_session.execute("ROLLBACK")
    assert store.audit_frame().equals(audit_before)
    assert store.annotate(SAE_A, "s", 1, "bob", label="after").label == "after"


# --- concurrency ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_sessions_lose_nothing(tmp_path):
    """20 sessions hammer 30 features for CONCURRENCY_SECONDS: conflicts happen, are retried, and the
    audit log ends up holding every save exactly once, consistent with the final annotations."""
    store = open_user_store(tmp_path / "saescope-user.duckdb")
    features = [(h, latent) for h in (SAE_A, SAE_B) for latent in range(15)]
    store.create_list("shared", "setup")
    make_atlas(tmp_path / "atlas.duckdb", [SAE_A, SAE_B], 15)
    store.connection.execute(f"ATTACH '{tmp_path / 'atlas.duckdb'}' AS atlas (READ_ONLY)")
    store.connection.execute("USE atlas")
    make_atlas(tmp_path / "atlas2.duckdb", [SAE_A], 15)

    deadline = time.monotonic() + CONCURRENCY_SECONDS
    edits: list[tuple[tuple[str, int], str, dict]] = []  # (feature, reviewer, fields): saves that returned
    undos: list[tuple[tuple[str, int], str]] = []  # undos that returned an annotation
    errors: list[BaseException] = []
    attach_rounds = [0]
    record = threading.Lock()

    def session(index: int) -> None:
        reviewer, rng, n = f"reviewer-{index}", random.Random(index), 0
        try:
            while time.monotonic() < deadline:
                n += 1
                feature = rng.choice(features)
                roll = rng.random()
                if roll < 0.75:
                    fields: dict[str, Any] = {"label": f"{reviewer}#{n}"}  # unique: finds this save in the audit log
                    if rng.random() < 0.5:
                        fields["status"] = rng.choice(STATUSES)
                    if rng.random() < 0.3:
                        fields["tags"] = sorted(rng.sample(SEED_TAGS, rng.randint(0, 2)))
                    if rng.random() < 0.3:
                        fields["confidence"] = rng.choice([None, "low", "medium", "high"])
                    if rng.random() < 0.2:
                        fields["notes"] = f"notes {n} by {reviewer}"
                    store.annotate(feature[0], "sae", feature[1], reviewer, **fields)
                    with record:
                        edits.append((feature, reviewer, fields))
                elif roll < 0.88:
                    if store.undo(feature[0], feature[1], reviewer) is not None:
                        with record:
                            undos.append((feature, reviewer))
                elif roll < 0.95:  # adds, or changes the note of a feature already on the list
                    store.add_to_list("shared", feature[0], "sae", feature[1], reviewer, note=f"{reviewer}#{n}")
                else:
                    store.remove_from_list("shared", feature[0], feature[1], reviewer)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def attacher() -> None:
        """What the dashboard does meanwhile: attach an atlas, join it with annotations, detach."""
        try:
            while time.monotonic() < deadline:
                cursor = store.connection.cursor()
                cursor.execute(f"ATTACH '{tmp_path / 'atlas2.duckdb'}' AS atlas2 (READ_ONLY)")
                cursor.execute(f"""SELECT count(*) FROM atlas2.features f JOIN atlas2.saes s USING (sae)
                    LEFT JOIN {store.table("annotations")} a ON a.sae_hash = s.content_hash AND a.latent = f.latent
                    WHERE coalesce(a.status, 'unreviewed') <> 'dead'""").fetchone()
                cursor.execute("DETACH atlas2")
                cursor.close()
                attach_rounds[0] += 1
                time.sleep(0.05)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(20)] + [threading.Thread(target=attacher)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]
    assert store.retries > 0, "no conflict happened: the test proved nothing"
    assert attach_rounds[0] > 10

    # pandas annotates a boolean-mask selection as Series | DataFrame: the casts say it is a frame
    audit = store.audit_frame()
    saves = cast(pd.DataFrame, audit[audit["action"].isin(["edit", "undo"])])
    print(
        f"\n{len(edits)} saves, {len(undos)} undos in {elapsed:.1f}s "
        f"({(len(edits) + len(undos)) / elapsed:.0f}/s); {store.retries} retries; {attach_rounds[0]} attach rounds"
    )

    # Every save that returned is in the log exactly once, by its author, on its feature.
    labels = cast(pd.DataFrame, saves[saves["field"] == "label"]).groupby("new_value")
    assert cast(pd.Series, audit[audit["action"] == "edit"]["edit_id"]).nunique() == len(edits)
    edit_of = {}
    for feature, reviewer, fields in edits:
        label_rows = cast(pd.DataFrame, labels.get_group(fields["label"])).to_dict("records")
        rows = [row for row in label_rows if row["action"] == "edit"]
        assert len(rows) == 1
        row = rows[0]
        assert (row["sae_hash"], row["latent"], row["reviewer"]) == (*feature, reviewer)
        edit_of[row["edit_id"]] = fields

    # Each undo that returned is one undo group, and no save is undone twice.
    undos_logged = cast(pd.DataFrame, saves[saves["action"] == "undo"])
    undo_groups = cast(pd.Series, undos_logged.groupby("edit_id")["undoes"].first())
    assert len(undo_groups) == len(undos) and undo_groups.is_unique

    # Replaying the log: each row's old value is what the previous save left (no lost update), each
    # save left the fields it asked for, and the result is every feature's final annotation.
    encode = {"tags": lambda v: json.dumps(list(v)), "confidence": lambda v: v}
    for key, rows in saves.groupby(["sae_hash", "latent"]):
        sae_hash, latent = cast(tuple[str, int], key)
        state = {"status": "unreviewed", "label": "", "tags": "[]", "notes": "", "confidence": None}
        for edit_id, group in rows.sort_values("id").groupby("edit_id", sort=False):
            for row in group.to_dict("records"):
                if row["field"] is None:  # an undo with nothing left to restore
                    continue
                assert row["old_value"] == state[row["field"]], (sae_hash, latent, row)
                state[row["field"]] = row["new_value"]
            for field, value in edit_of.get(edit_id, {}).items():
                assert state[field] == encode.get(field, lambda v: v)(value)
        final = store.annotation(sae_hash, latent)
        assert {field: encode.get(field, lambda v: v)(getattr(final, field)) for field in FIELDS} == state

    # The shared list holds what its log says.
    members: dict = {}
    shared_log = cast(pd.DataFrame, audit[audit["list_name"] == "shared"])
    for row in shared_log.sort_values("id").to_dict("records"):
        key = (row["sae_hash"], row["latent"])
        if row["action"] == "list_add":
            assert key not in members
            members[key] = row["new_value"]
        elif row["action"] == "list_note":
            assert members[key] == row["old_value"]
            members[key] = row["new_value"]
        elif row["action"] == "list_remove":
            assert members.pop(key) == row["old_value"]
    items = store.list_items("shared")
    assert {(r["sae_hash"], r["latent"]): r["note"] for r in items.to_dict("records")} == members
    store.close()


# --- experiments (steering runs, graphs) ---------------------------------------------------------


def test_an_experiment_is_recorded_whole_and_listed_newest_first(store):
    first = store.record_experiment(
        "steering",
        "alice",
        "The Lord said",
        "m" * 64,
        {"prompt": "The Lord said", "outputs": ["a", "b"], "coefficient": 40.0},
    )
    second = store.record_experiment("steering", "", "<script>x</script>", "m" * 64, {"prompt": "p"})
    listed = store.experiments("steering")
    assert list(listed["id"]) == [second, first]
    assert list(listed["reviewer"]) == ["anonymous", "alice"]
    assert store.experiments("graph").empty
    again = store.experiment(first)
    assert again["record"] == {"prompt": "The Lord said", "outputs": ["a", "b"], "coefficient": 40.0}
    assert again["kind"] == "steering" and again["reviewer"] == "alice"
    with pytest.raises(UserDataError, match="no experiment"):
        store.experiment("nope")


def test_bad_experiments_are_refused_and_read_only_mode_records_nothing(store, tmp_path):
    with pytest.raises(UserDataError, match="unknown experiment kind"):
        store.record_experiment("poem", "alice", "t", "m", {})
    with pytest.raises(UserDataError, match="cannot be stored as JSON"):
        store.record_experiment("steering", "alice", "t", "m", {"value": float("nan")})
    reader = open_user_store(store.path, read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.record_experiment("steering", "alice", "t", "m", {})


def test_deleting_a_saved_graph_removes_it_and_the_audit_log_says_who_and_which(store):
    kept = store.record_experiment("graph", "alice", "kept", "m" * 64, {"nodes": 1})
    gone = store.record_experiment("graph", "alice", "<b>gone</b>", "m" * 64, {"nodes": 2})
    assert store.delete_experiment(gone, "bob") is True
    assert list(store.experiments("graph")["id"]) == [kept]
    with pytest.raises(UserDataError, match="no experiment"):
        store.experiment(gone)
    assert store.delete_experiment(gone, "bob") is False, "a second delete finds nothing and logs nothing"
    audit = store.audit_frame()
    deleted = audit[audit["action"] == "experiment_delete"]
    assert list(deleted["reviewer"]) == ["bob"] and list(deleted["new_value"].isna()) == [True]
    assert json.loads(deleted["old_value"].iloc[0]) == {"id": gone, "kind": "graph", "title": "<b>gone</b>"}
    reader = open_user_store(store.path, read_only=True)
    with pytest.raises(ReadOnlyError, match="cannot delete the experiment"):
        reader.delete_experiment(kept, "mallory")
    assert list(store.experiments("graph")["id"]) == [kept]


def test_a_version_1_file_gains_the_experiments_table_and_keeps_its_labels(tmp_path):
    path = tmp_path / "v1.duckdb"
    store = open_user_store(path)
    store.annotate(SAE_A, "s", 3, "alice", label="kept")
    store.close()
    with duckdb.connect(str(path)) as connection:  # make it what version 1 wrote
        for later in ("experiments", "accounts", "atlas_access"):  # the tables versions 2 and 3 added
            connection.execute(f"DROP TABLE {later}")
        connection.execute("UPDATE user_meta SET value = '1' WHERE key = 'schema_version'")
    reader = open_user_store(path, read_only=True)  # read-only: no migration, no experiments
    assert reader.experiments("steering").empty
    reader.close()
    store = open_user_store(path)
    assert store.annotation(SAE_A, 3).label == "kept"
    store.record_experiment("steering", "alice", "t", "m", {"ok": True})
    store.close()
    with duckdb.connect(str(path), read_only=True) as connection:
        assert connection.execute("SELECT value FROM user_meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
