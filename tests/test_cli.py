"""``python -m analysis``: every subcommand has --help, and ``info`` describes what a spec resolves to."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from analysis.cli import build_parser
from analysis.steering_methods import DEFAULT_METHOD, METHODS


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True, timeout=300)


def test_every_subcommand_has_help():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {"demo", "info"} <= set(subcommands)
    for name in subcommands:
        result = run_cli(name, "--help")
        assert result.returncode == 0, result.stderr
        assert "usage: python -m analysis " + name in result.stdout


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


def test_info_as_json(demo_dir):
    result = run_cli("info", "--json", "--model", str(demo_dir / "model"), "--sae", str(demo_dir / "saes" / "resid-L2"))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["model"]["n_layers"] == 4 and info["model"]["d_model"] == 256
    assert [s["name"] for s in info["saes"]] == ["resid-L2"]
    assert info["saes"][0]["hook"] == "blocks.2.hook_resid_pre"


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "--model", "/no/such/folder"], "model folder '/no/such/folder' does not exist"),
        (["info", "--model", "someone/not-downloaded"], "not available offline"),
        (["info", "--sae", "/no/such/sae"], "SAE folder '/no/such/sae' does not exist"),
        (["demo", "--stages", "bake"], "unknown stage(s) bake"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_steer_offers_exactly_the_registered_methods_with_their_help():
    steer = build_parser()._subparsers._group_actions[0].choices["steer"]
    (method,) = [action for action in steer._actions if action.dest == "method"]
    assert method.choices == list(METHODS) and method.default == DEFAULT_METHOD
    assert all(f"{m.name}: {m.summary}" in method.help for m in METHODS.values())
    refused = run_cli("steer", "--prompt", "x", "--feature", "resid-L2:1:1", "--method", "multiply")
    assert refused.returncode == 2 and "invalid choice: 'multiply'" in refused.stderr
