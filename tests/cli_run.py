"""The CLI's own entry point run in the test's process, for cases that need no fresh interpreter.

A subprocess pays Python's start and the torch/transformers imports (about 10 CPU-seconds) per
case; the cases that check what a command refuses after those imports share one process instead.
The subprocess path itself stays covered by the quick cases and the end-to-end runs.
"""

from __future__ import annotations

import subprocess

import pytest

from analysis.cli import main


def cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess:
    """``saescope ARGS`` through ``analysis.cli.main``: exit code, stdout and stderr as a subprocess gives them."""
    capsys.readouterr()  # whatever earlier code printed is not this command's
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["saescope", *args], code, captured.out, captured.err)
