"""The package as a newcomer installs it: ``pip install -e .`` into a fresh virtual environment gives a
``saescope`` command whose help works before any dependency is installed (so it imports none of them)."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest
import setuptools

from analysis.cli import build_parser
from analysis.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _build_backend(folder: Path) -> Path:
    """A folder holding this environment's setuptools, for PYTHONPATH during the install: a fresh
    Python 3.11 venv ships setuptools 65 without ``wheel``, which cannot build an editable install,
    and fetching a newer one would need the network."""
    folder.mkdir()
    site = Path(setuptools.__file__).parent.parent
    for name in ("setuptools", "pkg_resources", "_distutils_hack"):
        if (site / name).exists():
            (folder / name).symlink_to(site / name)
    return folder


def test_pip_install_editable_gives_a_saescope_command_whose_help_needs_no_dependency(tmp_path):
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "-e", str(REPO_ROOT)],
        env=os.environ | {"PYTHONPATH": str(_build_backend(tmp_path / "backend"))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0  # nothing but us

    saescope = environment / "bin" / "saescope"
    result = subprocess.run([saescope, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: saescope ") and "--verbose" in result.stdout
    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert subcommands is not None
    for name in subcommands:
        result = subprocess.run([saescope, name, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (name, result.stderr)
        assert result.stdout.startswith(f"usage: saescope {name} "), name
