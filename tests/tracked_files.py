"""What the checkout's tracked files hold, so conftest can tell whether a test session changed any.

The snapshot is the content hash of every tracked file that differs from HEAD (changed or deleted):
a developer's own uncommitted edits are in it from the start and compare equal at the end, and a test
that rewrites a file, already edited or not, shows as a different hash.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DELETED = "deleted"


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=60).stdout


def snapshot(root: Path) -> dict[str, str] | None:
    """Path -> content hash (or ``DELETED``) of each tracked file differing from HEAD; None outside a git checkout."""
    try:
        if _git(root, "rev-parse", "--show-toplevel").strip() != str(root.resolve()):
            return None
        changed = _git(root, "diff", "HEAD", "--name-only", "--no-renames", "-z").split("\0")
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = [path for path in changed if path]
    present = [path for path in paths if (root / path).exists()]
    hashes = _git(root, "hash-object", "--", *present).split() if present else []
    return {path: DELETED for path in paths} | dict(zip(present, hashes))


def changed_paths(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The tracked files whose content differs between two snapshots."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
