"""The bad-input table: everything a user can type wrong, through the real CLI, gets exit code 2 and
one clear line on stderr, never a traceback. Each case is one line of data; add new ones there.

Cases marked ``quick`` are refused before torch is imported or anything is loaded, and must be
answered in a few seconds including Python's start; the others load a tokenizer or an SAE first.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.paths import DEMO_DIR, REPO_ROOT
from tests.cli_run import cli_in_process

SAE = DEMO_DIR / "saes" / "transcoder-L0"
QUICK_SECONDS = 5.0  # Python's start included; the checks themselves take milliseconds

# (subcommand and arguments, with {placeholders} for the files made below; what stderr must say; quick)
PRE = "precompute --sae {sae} --tokens 256 --out {tmp}/x.duckdb"
CASES = [
    (PRE + " --batch 0", "argument --batch: must be a whole number at least 1, not 0", True),
    (PRE + " --context 100000", "--context 100000 is longer than the model's context of 256 tokens", True),
    (PRE + " --context 300", "--context 300 is longer than the model's context of 256 tokens", True),
    (PRE + " --context 1", "argument --context: must be a whole number at least 2", True),
    (PRE + " --top-k 0", "argument --top-k: must be a whole number from 1 to 1,000, not 0", True),
    (PRE + " --tokens 0", "argument --tokens: must be a whole number at least 1, not 0", True),
    (PRE + " --tokens lots", "argument --tokens: expected a whole number, not 'lots'", True),
    (PRE + " --seed -3", "argument --seed: must be a whole number from 0", True),
    (PRE + " --checkpoint-minutes -1", "argument --checkpoint-minutes: must be at least 0", True),
    (PRE + " --shard 2/2", "--shard must be i/n with 0 <= i < n, not '2/2'", True),
    (PRE + " --device tpu", "unknown device 'tpu'", True),
    (PRE + " --out /proc/a.duckdb", "--out /proc/a.duckdb: cannot write in /proc", True),
    (PRE + " --out {tmp}", "is a folder; give a file path such as", True),
    (PRE + " --out {tmp}/no/such/a.duckdb", "the folder {tmp}/no/such does not exist", True),
    (PRE + " --out {existing}", "existing.duckdb exists; pass --overwrite to replace it", True),
    (PRE + " --out {existing} --resume", "exists (a complete atlas; --resume only continues an unfinished run)", True),
    (PRE + " --model ''", "argument --model: is empty", True),
    (PRE + " --sae ''", "argument --sae: is empty", True),
    (PRE + " --model {broken_model}", "broken-model/config.json is not a readable JSON model config", True),
    (PRE + " --corpus {tmp}/none.jsonl", "corpus '{tmp}/none.jsonl' does not exist", True),
    (PRE + " --corpus {text_file}", "is a file but not .jsonl", True),
    (PRE + " --corpus ''", "--corpus is empty", True),
    ("info --model ''", "argument --model: is empty", True),
    ("info --device gpu0", "unknown device 'gpu0'", True),
    ("demo --minutes 0", "argument --minutes: must be above 0", True),
    ("demo --stages bake", "unknown stage(s) bake", True),
    ("search-text --text hi --top 0", "argument --top: must be a whole number from 1 to 1,000", True),
    ("search-text --text hi --max-density 2", "argument --max-density: must be at least 0 and at most 1", True),
    ("graph --prompt hi --out /nope/g.json", "--out /nope/g.json: the folder /nope does not exist", True),
    ("graph --prompt hi --out {tmp}", "is a folder; give a file path", True),
    ("graph --prompt hi --out {tmp}/g.json --node-threshold 0", "argument --node-threshold: must be above 0", True),
    ("graph --prompt hi --out {tmp}/g.json --batch-size 0", "argument --batch-size: must be a whole number", True),
    ("merge {existing} --out /proc/m.duckdb", "--out /proc/m.duckdb: cannot write in /proc", True),
    ("merge {existing} --out {tmp}", "is a folder; give a file path", True),
    ("merge {existing} --out {existing}", "existing.duckdb exists; pass --overwrite", True),
    ("verify {existing} --sample -1", "argument --sample: must be a whole number from 0", True),
    ("verify --sample 4", "the following arguments are required: atlas", True),
    ("steer --prompt hi --feature resid-L2:1:5 --max-new-tokens 0", "max_new_tokens must be a whole number", True),
    ("steer --prompt hi --feature resid-L2:227", "a feature is SAE:LATENT:COEFFICIENT", True),
    (
        "steer --prompt hi --feature resid-L9:3:5",
        "--feature: no SAE called 'resid-L9' in --sae; there are resid-L2",
        True,
    ),
    (
        "steer --prompt hi --feature resid-L2:5000:5",
        "resid-L2 has no latent 5000: its latents are numbered 0 to 1023",
        True,
    ),
    ("steer --prompt ' ' --feature resid-L2:1:5", "--prompt is empty", True),
    ("steer --prompt hi --feature resid-L2:1:5 --top-p 0", "argument --top-p: must be above 0", True),
    ("steer --prompt hi --feature resid-L2:1:5 --seed -1", "argument --seed: must be a whole number from 0", True),
    ("steer --prompt hi --feature resid-L2:1:5 --max-new-tokens 255", "leaves no room for a prompt", True),
    ("steer --prompt hi --feature resid-L2:1:5 --sae {tmp}/no-sae", "SAE folder '{tmp}/no-sae' does not exist", True),
    ("steer --prompt hi --feature resid-L2:1:5 --model {tmp}/no-model", "model folder '{tmp}/no-model' does not", True),
    ("info --sae {tmp}", "scratch' holds no SAE: expected cfg.json and sae_weights.safetensors", True),
    ("search-text --text ' '", "--text is empty", True),
    ("search-text --text hi --positions 1,x", "--positions must be token positions separated by commas", True),
    ("search-text --text hi --positions -1", "--positions are counted from 0", True),
    ("search-text --text hi --atlas {tmp}/none.duckdb", "no atlas at {tmp}/none.duckdb", True),
    ("search-text --text hi --atlas {existing}", "existing.duckdb is not a readable DuckDB file", True),
    ("graph --prompt hi --out {tmp}/g.json --versus ' a'", "--versus needs --target", True),
    ("graph --prompt ' ' --out {tmp}/g.json", "--prompt is empty", True),
    ("graph --prompt hi --out {tmp}/g.json --atlas {existing}", "existing.duckdb is not a readable DuckDB file", True),
    ("graph --prompt hi --out {tmp}/g.json --sae {tmp}/none", "SAE folder '{tmp}/none' does not exist", True),
    ("graph --prompt hi --out {tmp}/g.json --top-features -1", "argument --top-features: must be a whole number", True),
    ("merge {tmp}/missing.duckdb --out {tmp}/m.duckdb", "no atlas at {tmp}/missing.duckdb", True),
    ("merge {existing} --out {tmp}/m.duckdb", "existing.duckdb is not a readable DuckDB file", True),
    ("verify {tmp}/missing.duckdb", "no atlas at {tmp}/missing.duckdb", True),
    ("info --model {broken_model}", "broken-model/config.json could not be read", False),
    (PRE + " --sae {garbage_sae}", "garbage-sae/sae_weights.safetensors is not a readable safetensors file", False),
    (
        PRE + " --sae {mismatched_sae}",
        "mismatched-sae: cfg.json and sae_weights.safetensors disagree (size mismatch",
        False,
    ),
    (PRE + " --sae {cfg_not_json}", "cfg-not-json/cfg.json is not a readable JSON config", True),
    (PRE + " --corpus {corpus}/null.jsonl", "null.jsonl:2: 'text' is null, not a string", False),
    (PRE + " --corpus {corpus}/list.jsonl", "list.jsonl:1: 'text' is a list, not a string", False),
    (PRE + " --corpus {corpus}/number.jsonl", "number.jsonl:1: 'text' is a number, not a string", False),
    (PRE + " --corpus {corpus}/broken.jsonl", "broken.jsonl:2: not JSON", False),
    (
        PRE + " --corpus {corpus}/no-text.jsonl",
        "no-text.jsonl:1: every line must be a JSON object with a 'text'",
        False,
    ),
    (PRE + " --corpus {corpus}/empty.jsonl", "holds no documents: every document is empty", False),
    (
        PRE + " --corpus {corpus}/latin1.jsonl --strict",
        "latin1.jsonl:2: not UTF-8 (1 undecodable byte); --strict refuses it",
        False,
    ),
    (PRE + " --corpus {corpus}/random --strict", "random/noise.txt: ", False),
    (PRE + " --corpus {corpus}/nothing", "holds no documents: no .md, .rst, .text, .txt files", False),
]


def _symlinked_copy(source: Path, target: Path) -> Path:
    """``target`` holding links to every file of ``source``, so one file can be replaced cheaply."""
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-input")
    broken_model = _symlinked_copy(DEMO_DIR / "model", root / "broken-model")
    (broken_model / "config.json").unlink()
    (broken_model / "config.json").write_text('{"model_type": "gpt2", ')
    garbage = _symlinked_copy(SAE, root / "garbage-sae")
    (garbage / "sae_weights.safetensors").unlink()
    (garbage / "sae_weights.safetensors").write_bytes(os.urandom(4096))
    mismatched = _symlinked_copy(SAE, root / "mismatched-sae")
    cfg = json.loads((SAE / "cfg.json").read_text())
    (mismatched / "cfg.json").unlink()
    (mismatched / "cfg.json").write_text(json.dumps(cfg | {"d_sae": cfg["d_sae"] // 2}))
    not_json = _symlinked_copy(SAE, root / "cfg-not-json")
    (not_json / "cfg.json").unlink()
    (not_json / "cfg.json").write_text("d_sae = 512\n")
    corpus = root / "corpus"
    corpus.mkdir()
    good = json.dumps({"text": "Some words of a document. " * 20})
    for name, lines in {
        "null": [good, '{"text": null}'],
        "list": ['{"text": ["a", "b"]}'],
        "number": ['{"text": 3}'],
        "broken": [good, '{"text": "unterminated'],
        "no-text": ['{"body": "words"}'],
        "empty": ['{"text": ""}', '{"text": "   "}'],
    }.items():
        (corpus / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (corpus / "latin1.jsonl").write_bytes(good.encode() + b"\n" + '{"text": "caf\u00e9"}'.encode("latin-1") + b"\n")
    (corpus / "random").mkdir()
    (corpus / "random" / "noise.txt").write_bytes(bytes(range(128, 256)) * 8)
    (corpus / "nothing").mkdir()
    (corpus / "nothing" / "data.bin").write_bytes(b"\x00")
    text_file = root / "notes.txt"
    text_file.write_text("a text file")
    existing = root / "existing.duckdb"
    existing.write_text("an earlier result")
    tmp = root / "scratch"
    tmp.mkdir()
    return {
        "tmp": str(tmp),
        "sae": str(SAE),
        "existing": str(existing),
        "broken_model": str(broken_model),
        "garbage_sae": str(garbage),
        "mismatched_sae": str(mismatched),
        "cfg_not_json": str(not_json),
        "corpus": str(corpus),
        "text_file": str(text_file),
    }


def _argv(line: str, files: dict[str, str]) -> list[str]:
    return [part.format(**files) for part in shlex.split(line)]


@pytest.mark.parametrize(
    "line, message, quick",
    [pytest.param(*case, id=case[0], marks=() if case[2] else pytest.mark.slow) for case in CASES],
)
def test_bad_input_is_one_clear_line(line, message, quick, files, capsys):
    """Quick cases in a fresh interpreter (timed: Python's start included); the others through the
    same entry point in this process, which imports torch once for all of them."""
    started = time.monotonic()
    if quick:
        result = subprocess.run(
            [sys.executable, "-m", "analysis", *_argv(line, files)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    else:
        result = cli_in_process(capsys, *_argv(line, files))
    seconds = time.monotonic() - started
    lines = [text for text in result.stderr.splitlines() if text.strip()]
    assert result.returncode == 2, (line, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert message.format(**files) in lines[0], lines[0]
    if quick:
        assert seconds < QUICK_SECONDS, f"{line}: {seconds:.1f} s"
    # nothing was written where the output would go
    assert not any(Path(files["tmp"]).iterdir())
