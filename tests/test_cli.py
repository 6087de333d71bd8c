"""``python -m analysis``: every subcommand has --help, and ``info`` describes what a spec resolves to."""

from __future__ import annotations

import argparse
import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.request

import pytest

from analysis.cli import build_parser
from analysis.paths import REPO_ROOT
from analysis.steering_methods import DEFAULT_METHOD, METHODS
from tests.browser import served
from tests.cli_run import cli_in_process


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True, timeout=300)


def refused_by_argparse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str]:
    """``saescope ARGS`` in this process where argparse itself refuses (it exits): the exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        cli_in_process(capsys, *args)
    return exited.value.code, capsys.readouterr().err


def cli_subcommands() -> dict[str, argparse.ArgumentParser]:
    """The CLI's subcommands by name (argparse has no public accessor for them)."""
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_every_subcommand_has_help(capsys):
    """The first subcommand's help from a subprocess, the others' in this process (argparse exits 0)."""
    subcommands = cli_subcommands()
    assert {"demo", "info"} <= set(subcommands)
    first, *others = subcommands
    result = run_cli(first, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: saescope " + first in result.stdout
    for name in others:
        with pytest.raises(SystemExit) as exited:
            cli_in_process(capsys, name, "--help")
        assert exited.value.code == 0
        assert "usage: saescope " + name in capsys.readouterr().out


def test_help_imports_no_heavy_dependency():
    """``saescope --help`` and every ``saescope <subcommand> --help`` answer at once: no torch, no Streamlit."""
    code = """
import contextlib, io, sys
from analysis.cli import build_parser, main
for argv in [["--help"]] + [[name, "--help"] for name in build_parser()._subparsers._group_actions[0].choices]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main(argv)
heavy = {"torch", "streamlit", "transformer_lens", "sae_lens", "circuit_tracer", "transformers", "duckdb", "pandas", "numpy"}
print(sorted(heavy & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.model
@pytest.mark.slow
def test_info_describes_the_demo_model_and_saes():
    result = run_cli("info", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "GPT2LMHeadModel, 4 layers, d_model 256" in result.stdout
    assert "device cpu" in result.stdout
    assert (
        "transcoder  transcoder-L0: jumprelu_transcoder, hook blocks.0.ln2.hook_normalized -> blocks.0.hook_mlp_out"
        in result.stdout
    )
    assert "sae         resid-L2: jumprelu, hook blocks.2.hook_resid_pre, d_in 256, d_sae 1024" in result.stdout


@pytest.mark.model
@pytest.mark.slow
def test_info_as_json(demo_dir, capsys):
    """In this process (``info``'s subprocess is the test above)."""
    result = cli_in_process(
        capsys, "info", "--json", "--model", str(demo_dir / "model"), "--sae", str(demo_dir / "saes" / "resid-L2")
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["model"]["n_layers"] == 4 and info["model"]["d_model"] == 256
    assert [s["name"] for s in info["saes"]] == ["resid-L2"]
    assert info["saes"][0]["hook"] == "blocks.2.hook_resid_pre"


@pytest.mark.model
@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "--model", "/no/such/folder"], "model folder '/no/such/folder' does not exist"),
        (["info", "--model", "someone/not-downloaded"], "not available offline"),
        (["info", "--sae", "/no/such/sae"], "SAE folder '/no/such/sae' does not exist"),
        (["demo", "--stages", "bake"], "unknown stage(s) bake"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, capsys):
    """``demo`` as a subprocess (its only one here); ``info``'s refusals in this process."""
    result = run_cli(*args) if args[0] == "demo" else cli_in_process(capsys, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_subcommand_adds_the_traceback(where, capsys):
    """In this process: ``demo``'s subprocess is ``test_bad_input_is_one_clear_line``'s."""
    args = ["demo", "--stages", "bake"]
    result = cli_in_process(capsys, *(["--verbose", *args] if where == "before" else [*args, "--verbose"]))
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "analysis.errors.UsageError: unknown stage(s) bake" in result.stderr
    assert result.stderr.endswith("error: unknown stage(s) bake; choose from tokenizer, model, saes, report\n")


def test_unknown_arguments_are_refused(capsys):
    code, stderr = refused_by_argparse(capsys, "info", "--bogus", "1")
    assert code == 2 and "unrecognized arguments: --bogus 1" in stderr


@pytest.mark.slow
def test_dashboard_starts_streamlit_with_the_options_given_after_it():
    """The port the server answers on is the one given after ``dashboard``; a SIGTERM to the
    command (what a service manager sends) stops the server too, leaving nothing on the port."""
    with served([sys.executable, "-m", "analysis", "dashboard", "--verbose"], REPO_ROOT) as url:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as response:
            assert response.read() == b"ok"
    with pytest.raises(OSError):  # served() has sent SIGTERM and waited for the command to exit
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=5)


def test_steer_offers_exactly_the_registered_methods_with_their_help(capsys):
    steer = cli_subcommands()["steer"]
    (method,) = [action for action in steer._actions if action.dest == "method"]
    assert method.choices == list(METHODS) and method.default == DEFAULT_METHOD
    assert method.help is not None
    assert all(f"{m.name}: {m.summary}" in method.help for m in METHODS.values())
    code, stderr = refused_by_argparse(
        capsys, "steer", "--prompt", "x", "--feature", "resid-L2:1:1", "--method", "multiply"
    )  # in this process: the terminal test below runs ``steer`` as a subprocess
    assert code == 2 and "invalid choice: 'multiply'" in stderr


def test_bad_arguments_of_every_model_command_are_refused_before_torch_is_imported(tmp_path):
    """A typo in any argument of info, search-text, steer, graph, precompute, verify or merge is one line
    and exit code 2, answered without importing torch, transformers or circuit-tracer (so in a second,
    not after the ~25 s a model load takes here)."""
    code = f"""
import contextlib, io, sys
from analysis.cli import main
cases = [
    ["info", "--sae", "/no/such/sae"],
    ["info", "--model", "/no/such/model"],
    ["search-text", "--text", "hi", "--atlas", "/no/atlas.duckdb"],
    ["steer", "--prompt", "hi", "--feature", "resid-L2:227"],
    ["steer", "--prompt", "hi", "--feature", "resid-L2:4096:5"],
    ["graph", "--prompt", "hi", "--out", "{tmp_path}/g.json", "--versus", " a"],
    ["precompute", "--tokens", "256", "--out", "{tmp_path}/a.duckdb", "--sae", "/no/such/sae"],
    ["verify", "/no/atlas.duckdb"],
    ["merge", "/no/part.duckdb", "--out", "{tmp_path}/m.duckdb"],
]
codes = []
for argv in cases:
    with contextlib.redirect_stderr(io.StringIO()) as err:
        codes.append((main(argv), err.getvalue().count("\\n"), err.getvalue().startswith("error: ")))
heavy = {{"torch", "transformers", "transformer_lens", "sae_lens", "circuit_tracer"}}
print(codes, sorted(heavy & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{[(2, 1, True)] * 9} []"


def test_on_a_terminal_a_model_command_says_at_once_that_it_is_loading():
    """With stderr on a terminal, ``steer`` prints its first line within seconds (before torch), not
    after the tens of seconds the imports and the load take; the run is stopped once it has."""
    main_fd, terminal = pty.openpty()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "analysis", "steer", "--prompt", "hi", "--feature", "resid-L2:1:5"],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        cwd=REPO_ROOT,
    )
    os.close(terminal)
    try:
        ready, _, _ = select.select([main_fd], [], [], 30)
        assert ready, "nothing on the terminal within 30 s"
        first = os.read(main_fd, 1000).decode()
        seconds = time.monotonic() - started
    finally:
        process.kill()
        process.wait()
        os.close(main_fd)
    assert first.startswith(f"loading {REPO_ROOT / 'data' / 'demo' / 'model'} with 1 SAE spec(s)"), first
    assert seconds < 5, f"{seconds:.1f} s"
