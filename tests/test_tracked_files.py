"""The check behind conftest's end-of-session guard (no test may change a tracked file), on a real
git repository: it sees a rewritten or deleted file, and not the developer's own earlier edits."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.tracked_files import changed_paths, snapshot

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(folder, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True, capture_output=True
    )


@pytest.fixture
def checkout(tmp_path):
    git(tmp_path, "init", "-q")
    for name in ("shot.png", "notes.md", "kept.txt"):
        (tmp_path / name).write_text(f"{name} as committed\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "start")
    return tmp_path


def test_a_rewritten_or_deleted_tracked_file_is_seen_and_earlier_edits_are_not(checkout):
    (checkout / "notes.md").write_text("the developer's own edit, before the tests\n")
    before = snapshot(checkout)
    assert before is not None and list(before) == ["notes.md"]
    assert changed_paths(before, snapshot(checkout) or {}) == []

    (checkout / "shot.png").write_text("rewritten by a test\n")
    (checkout / "kept.txt").unlink()
    (checkout / "untracked.txt").write_text("new files are the tests' own business\n")
    assert changed_paths(before, snapshot(checkout) or {}) == ["kept.txt", "shot.png"]


def test_an_already_edited_file_that_a_test_changes_again_is_seen(checkout):
    (checkout / "notes.md").write_text("the developer's own edit\n")
    before = snapshot(checkout) or {}
    (checkout / "notes.md").write_text("the developer's own edit, then a test's\n")
    assert changed_paths(before, snapshot(checkout) or {}) == ["notes.md"]


def test_outside_a_git_checkout_there_is_nothing_to_compare(tmp_path):
    (tmp_path / "inner").mkdir()
    assert snapshot(tmp_path / "inner") is None
