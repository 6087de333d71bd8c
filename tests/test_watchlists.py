"""Watchlists (docs/GOVERNANCE.md): the file format's checks, finding a watched feature in a reordered
or retrained SAE by its decoder direction, ``saescope watch run``'s exit codes, JUnit XML and run
records as CI meets them, and the model-diffing case: a check that holds on the demo model and fails
on a copy fine-tuned on the Bible, because the watched latent's activation rose (measured here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from analysis.governance.watchlist_file import WatchlistError, encode_row, load_watchlist, row_sha256, to_toml
from analysis.paths import DEMO_MODEL, DEMO_SAES, REPO_ROOT
from tests.cli_run import cli_in_process

EXAMPLE = REPO_ROOT / "docs" / "examples" / "scripture_drift.watchlist.toml"
SCRIPTURE = ["And God said, Let there be light: and there was light.", "Thou shalt love thy neighbour as thyself."]
EVERYDAY = (REPO_ROOT / "docs" / "examples" / "everyday.txt").read_text().splitlines()[:6]
LATENT = 345  # resid-L2's KJV-register latent (docs/GOVERNANCE.md says how it was chosen)


def saescope(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=600,
    )


def demo_row(latent: int = LATENT) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(DEMO_SAES / "resid-L2" / "sae_weights.safetensors")["W_dec"][latent]


def feature(**overrides) -> dict:
    row = demo_row()
    return {
        "id": "scripture",
        "sae": "resid-L2",
        "latent": LATENT,
        "decoder_sha256": row_sha256(row),
        "decoder_row": encode_row(row),
    } | overrides


def write(folder: Path, checks: list[dict], features: list[dict] | None = None, name: str = "w.toml") -> Path:
    path = folder / name
    path.write_text(to_toml("test", "", features or [feature()], checks))
    return path


FIRES = {"id": "fires", "feature": "scripture", "expect": "fires_at_least", "threshold": 5.0, "texts": SCRIPTURE}


# --- the file format: every mistake is one line naming where -------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("format = 1", "format = 2"), "format 2 is newer than this SAEscope reads (1)"),
        (lambda t: t.replace("format = 1\n", ""), "'format = 1' must be the file's first setting"),
        (lambda t: t.replace('expect = "fires_at_least"', 'expect = "fires_sometimes"'), "'expect' must be one of"),
        (lambda t: t.replace("threshold = 5.0", "treshold = 5.0"), "unknown key 'treshold'"),
        (lambda t: t.replace("threshold = 5.0", 'threshold = "high"'), "'threshold' must be a finite number"),
        (lambda t: t.replace('feature = "scripture"', 'feature = "other"'), "feature 'other' is not one of"),
        (lambda t: t.replace("latent = 345", "latent = -1"), "'latent' must be a whole number"),
        (lambda t: t.replace('decoder_sha256 = "', 'decoder_sha256 = "0'), "'decoder_sha256' must be 64 hexadecimal"),
        (
            lambda t: t.replace('decoder_row = "', 'decoder_row = "AAAAAAAAAAAAAAAA'),
            "does not have the decoder_sha256 given",
        ),
        (lambda t: t.replace("texts = [", 'texts_file = "missing.txt"\nunused = ['), "unknown key 'unused'"),
        (lambda t: t + "[oops\n", "is not valid TOML"),
    ],
)
def test_a_bad_watchlist_is_refused_in_one_line_naming_where(tmp_path, edit, message):
    path = write(tmp_path, [FIRES])
    load_watchlist(path)  # the unedited file is valid
    path.write_text(edit(path.read_text()))
    with pytest.raises(WatchlistError, match=None) as caught:
        load_watchlist(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_rise_checks_need_exactly_one_allowance_and_steering_needs_single_tokens_listed(tmp_path):
    rise = {"id": "rise", "feature": "scripture", "expect": "mean_rise_at_most", "texts": EVERYDAY}
    with pytest.raises(WatchlistError, match="exactly one of 'max_rise'"):
        load_watchlist(write(tmp_path, [rise]))
    with pytest.raises(WatchlistError, match="exactly one of 'max_rise'"):
        load_watchlist(write(tmp_path, [rise | {"max_rise": 1.0, "max_rise_fraction": 0.5}]))
    steer = {"id": "s", "feature": "scripture", "expect": "steering_raises", "coefficient": 5.0, "texts": ["x"]}
    with pytest.raises(WatchlistError, match="'tokens' must list"):
        load_watchlist(write(tmp_path, [steer]))
    assert load_watchlist(write(tmp_path, [rise | {"max_rise": 1.0}])).checks[0].needs_baseline_model


def test_texts_file_is_read_relative_to_the_watchlist(tmp_path):
    (tmp_path / "texts.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    check = {k: v for k, v in FIRES.items() if k != "texts"} | {"texts_file": "texts.jsonl"}
    assert load_watchlist(write(tmp_path, [check])).checks[0].texts == ("one", "two")
    (tmp_path / "texts.jsonl").write_text('{"text": "one"}\n[1]\n')
    with pytest.raises(WatchlistError, match="line 2 is not a JSON object"):
        load_watchlist(write(tmp_path, [check]))


def test_watch_run_refuses_bad_input_with_exit_2_before_loading_a_model(tmp_path, capsys):
    """In this process: ``watch run``'s subprocess is the CI run below."""
    bad = tmp_path / "bad.toml"
    bad.write_text('format = 1\nname = "x"\n[[features]]\nid = 3\n')
    result = cli_in_process(capsys, "watch", "run", "--watchlist", str(bad), "--runs-dir", str(tmp_path / "runs"))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: features[0]: 'id' must be a non-empty string, not 3"
    ], result.stderr
    rise = {"id": "rise", "feature": "scripture", "expect": "mean_rise_at_most", "max_rise": 1.0, "texts": EVERYDAY}
    needs_baseline = write(tmp_path, [rise])
    result = cli_in_process(
        capsys, "watch", "run", "--watchlist", str(needs_baseline), "--model", str(tmp_path / "nowhere")
    )
    assert result.returncode == 2 and "give --baseline MODEL" in result.stderr and "Traceback" not in result.stderr
    result = cli_in_process(
        capsys, "watch", "run", "--watchlist", str(write(tmp_path, [FIRES])), "--model", str(tmp_path / "nowhere")
    )
    assert result.returncode == 2 and result.stderr.startswith("error: --model ") and "no config.json" in result.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir()), "nothing ran, nothing recorded"


# --- finding the watched feature in another SAE ----------------------------------------------------


@pytest.fixture(scope="module")
def permuted_saes(tmp_path_factory):
    """The demo's resid-L2 with its latents in another order (a "retrained" SAE that learnt the same
    dictionary), written to disk like any SAE folder: (folder, permutation)."""
    from analysis.sae_loading import load_saes

    loaded = load_saes(str(DEMO_SAES / "resid-L2"))[0]
    order = np.random.default_rng(0).permutation(loaded.d_sae)
    state = loaded.sae.state_dict()
    permuted = {
        name: (
            tensor[order]
            if name in ("b_enc", "threshold", "W_dec")
            else tensor[:, order]
            if name == "W_enc"
            else tensor
        )
        for name, tensor in state.items()
    }
    loaded.sae.load_state_dict(permuted)
    folder = tmp_path_factory.mktemp("permuted") / "resid-L2"
    loaded.sae.save_model(folder)
    return folder.parent, order


@pytest.mark.model
def test_a_reordered_sae_is_matched_by_the_decoder_hash_and_a_perturbed_one_by_cosine(permuted_saes):
    from analysis.governance.watch_checks import resolve
    from analysis.sae_loading import load_saes

    folder, order = permuted_saes
    moved_to = int(np.flatnonzero(order == LATENT)[0])
    loaded = load_saes(str(folder / "resid-L2"))[0]
    watched = load_watchlist_feature(feature())
    found = resolve(watched, loaded)
    assert (found.latent, found.how, found.cosine) == (moved_to, "moved", 1.0)

    import torch

    with torch.no_grad():  # retrained: every decoder row moved a little, so no hash matches any more
        noise = torch.from_numpy(np.random.default_rng(1).normal(size=loaded.sae.W_dec.shape).astype(np.float32))
        loaded.sae.W_dec.add_(
            0.3 * loaded.sae.W_dec.norm(dim=1, keepdim=True) * noise / noise.norm(dim=1, keepdim=True)
        )
    found = resolve(watched, loaded)
    assert found.how == "cosine" and found.latent == moved_to and 0.9 < found.cosine < 0.99
    with pytest.raises(WatchlistError, match=r"no latent of resid-L2 matches .* below min_cosine 0.99"):
        resolve(load_watchlist_feature(feature(min_cosine=0.99)), loaded)
    with pytest.raises(WatchlistError, match="stores only the row's hash"):
        resolve(load_watchlist_feature({k: v for k, v in feature().items() if k != "decoder_row"}), loaded)


def load_watchlist_feature(table: dict, folder: Path | None = None):
    """A feature as the loader reads it from a file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), [FIRES | {"feature": table["id"]}], [table])
        return next(iter(load_watchlist(path).features.values()))


# --- watch run as CI runs it ----------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
def test_watch_run_exit_codes_junit_and_run_record_on_a_reordered_sae(tmp_path, permuted_saes, capsys):
    """The passing run as CI runs it (a subprocess, the runs folder from the environment); the failing
    run in this process (the same main(), whose exit code the console script passes on)."""
    folder, order = permuted_saes
    quiet = {"id": "quiet", "feature": "scripture", "expect": "fires_at_most", "threshold": 0.5, "texts": SCRIPTURE}
    steer = {
        "id": "steer",
        "feature": "scripture",
        "expect": "steering_raises",
        "coefficient": 20.0,
        "tokens": [" ye", " thee"],
        "texts": ["Then he said"],
    }
    runs = tmp_path / "runs"
    holds = write(tmp_path, [FIRES, steer], name="holds.toml")
    result = saescope(
        "watch", "run", "--watchlist", str(holds), "--sae", str(folder), "--junit", str(tmp_path / "a.xml"),
        env={"SAESCOPE_WATCH_RUNS": str(runs)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    suite = ET.parse(tmp_path / "a.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "0")
    assert [case.get("name") for case in suite.iter("testcase")] == ["fires", "steer"]
    assert "all checks hold" in result.stdout and "| fires |" in result.stdout
    (record_file,) = runs.glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["run_id"] == record_file.stem and record["passed"] is True
    assert record["features"][0]["latent"] == int(np.flatnonzero(order == LATENT)[0])
    assert record["features"][0]["how"] == "moved"
    assert record["watchlist"]["sha256"] == __import__("hashlib").sha256(holds.read_bytes()).hexdigest()
    assert len(record["model"]["content_hash"]) == 64 and len(record["saes"]["resid-L2"]["content_hash"]) == 64
    assert {"torch", "sae-lens", "transformer-lens"} <= set(record["libraries"]) and record["user"]
    maxima = record["checks"][0]["measured"]["text_maxima"]
    assert len(maxima) == 2 and min(maxima) >= 5.0

    fails = write(tmp_path, [FIRES, quiet], name="fails.toml")
    summary = tmp_path / "summary.md"
    result = cli_in_process(
        capsys, "watch", "run", "--watchlist", str(fails), "--sae", str(folder), "--junit", str(tmp_path / "b.xml"),
        "--summary", str(summary), "--runs-dir", str(runs),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    suite = ET.parse(tmp_path / "b.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    (failure,) = suite.iter("failure")
    assert "≤ 0.5 on 0 of 2 texts" in failure.get("message", "")
    assert "1 failed" in summary.read_text() and result.stdout == ""
    assert len(list(runs.glob("*.json"))) == 2


@pytest.mark.model
@pytest.mark.slow
def test_a_check_that_holds_on_the_demo_model_fails_on_a_copy_fine_tuned_on_the_bible(tmp_path):
    """The fast variant of docs/GOVERNANCE.md's example: a few steps at a high learning rate on the
    Bible's held-out documents, then the committed example watchlist's drift check on both models."""
    tuned = tmp_path / "tuned"
    result = saescope(
        "watch", "finetune-demo", "--domain", "bible", "--steps", "8", "--lr", "3e-3", "--batch", "4",
        "--context", "64", "--out", str(tuned),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tuned / "finetune.json").read_text())["steps_done"] == 8
    watchlist = tmp_path / "drift.toml"
    text = EXAMPLE.read_text()
    watchlist.write_text(text)
    shutil.copy(EXAMPLE.parent / "everyday.txt", tmp_path / "everyday.txt")

    from analysis.governance.watch_run import RunRequest, check_request, run

    records = {}
    for name, model in (("base", str(DEMO_MODEL)), ("tuned", str(tuned))):
        request = RunRequest(watchlist, model, str(DEMO_MODEL), (str(DEMO_SAES / "resid-L2"),), "cpu", runs=tmp_path)
        records[name] = run(request, check_request(request))
    drift = {name: next(c for c in r["checks"] if c["id"] == "no-scripture-drift") for name, r in records.items()}
    assert drift["base"]["status"] == "passed" and drift["base"]["measured"]["rise"] == 0.0
    assert drift["tuned"]["status"] == "failed"
    measured = drift["tuned"]["measured"]
    assert measured["baseline_mean"] == drift["base"]["measured"]["mean"]
    assert measured["rise"] > measured["allowed_rise"] > 0
    assert records["tuned"]["model"]["content_hash"] != records["base"]["model"]["content_hash"]
    assert records["tuned"]["baseline"]["content_hash"] == records["base"]["model"]["content_hash"]


def test_the_runs_folder_comes_from_the_flag_then_the_environment_and_junk_files_are_not_runs(tmp_path, monkeypatch):
    from analysis.governance.watch_run import read_runs, runs_dir

    monkeypatch.setenv("SAESCOPE_WATCH_RUNS", str(tmp_path / "env"))
    assert runs_dir(tmp_path / "flag") == tmp_path / "flag" and runs_dir() == tmp_path / "env"
    monkeypatch.delenv("SAESCOPE_WATCH_RUNS")
    assert runs_dir() == Path.home() / ".local" / "share" / "saescope" / "watch_runs"
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"format": 1, "run_id": "b"}))
    assert read_runs(tmp_path) == []


def _demo_detector(folder: Path, sae_hash: str, model_hash: str) -> Path:
    """A detector.json as ``detector train`` writes it, reading latent 345 and one other of resid-L2
    (weights chosen here: the check is that a watchlist runs what the file says, on any model)."""
    from analysis.governance.detector_files import FORMAT

    folder.mkdir()
    detector = {
        "format": FORMAT,
        "model": {"spec": "a fine-tuned checkpoint", "content_hash": model_hash},
        "sae": {"name": "resid-L2", "spec": str(DEMO_SAES / "resid-L2"), "content_hash": sae_hash},
        "hook": "blocks.2.hook_resid_pre",
        "pool": "max",
        "features": [{"latent": LATENT, "weight": 1.5}, {"latent": 17, "weight": -0.5}],
        "intercept": -6.0,
        "threshold": 0.5,
    }
    (folder / "detector.json").write_text(json.dumps(detector))
    return folder


@pytest.mark.model
def test_a_watched_detector_scores_texts_on_a_model_it_was_not_trained_on(tmp_path, live):
    """A detector feature is measured by the detector's own score (its SAE matched by content hash,
    any model: watching other checkpoints is the point); an unknown detector folder is one line."""
    from analysis.governance.detector_run import score_text
    from analysis.governance.watch_run import measure_and_record

    _demo_detector(tmp_path / "scripture-detector", live.sae_hashes["resid-L2"], "0" * 64)
    checks = [
        FIRES | {"feature": "detector", "threshold": 0.5},
        FIRES | {"id": "quiet", "feature": "detector", "expect": "fires_at_most", "texts": EVERYDAY, "threshold": 0.5},
    ]
    watchlist = load_watchlist(write(tmp_path, checks, [{"id": "detector", "detector": "scripture-detector"}]))
    assert watchlist.sae_names == ["resid-L2"]
    record = measure_and_record(watchlist, live, "demo", folder=None)
    detector = json.loads((tmp_path / "scripture-detector" / "detector.json").read_text())
    for check, texts in zip(record["checks"], (SCRIPTURE, EVERYDAY)):
        expected = [score_text(live, detector, "resid-L2", text).score for text in texts]
        assert check["measured"]["text_maxima"] == pytest.approx(expected, abs=1e-9)
        threshold_holds = all(v >= 0.5 for v in expected) if check["id"] == "fires" else all(v <= 0.5 for v in expected)
        assert (check["status"] == "passed") == threshold_holds
    with pytest.raises(WatchlistError, match="has no detector.json"):
        load_watchlist(write(tmp_path, [FIRES | {"feature": "pii"}], [{"id": "pii", "detector": "nowhere"}]))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "detector.json").write_text("{}")
    with pytest.raises(WatchlistError, match="is not a saescope-detector/1 file"):
        load_watchlist(write(tmp_path, [FIRES | {"feature": "old"}], [{"id": "old", "detector": "old"}]))


# --- watch build --list: a watchlist from a saved feature list -------------------------------------


def _feature_list(path: Path, name: str, features: list[tuple[str, int]]) -> None:
    """A feature list in the user-data file at ``path``, as the Lists page saves one (by SAE content hash)."""
    from dashboard.userdata import open_user_store
    from tests.test_detectors import atlas_sae_hash

    store = open_user_store(path)
    store.create_list(name, "dana")
    for sae, latent in features:
        store.add_to_list(name, atlas_sae_hash(sae) if sae != "gone" else "0" * 64, sae, latent, "dana")
    store.close()  # the command opens the file itself


@pytest.mark.model
def test_watch_build_from_a_saved_list_writes_the_lists_features_with_their_means(tmp_path, capsys):
    user_db = tmp_path / "userdata.duckdb"
    _feature_list(user_db, "scripture watch", [("resid-L2", LATENT), ("transcoder-L2", 3), ("gone", 7)])
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SCRIPTURE) + "\n")
    out = tmp_path / "w.toml"
    common = ("--texts-file", str(texts), "--user-db", str(user_db))
    result = saescope("watch", "build", "--list", "scripture watch", *common, "--out", str(out), "--name", "from list")
    assert result.returncode == 0, result.stderr
    assert "1 of the list's features are on SAEs not loaded: left out" in result.stderr
    built = load_watchlist(out)
    assert built.name == "from list"
    assert [(f.sae, f.latent) for f in built.features.values()] == [("resid-L2", LATENT), ("transcoder-L2", 3)]
    means = {c.feature: c.baseline_mean for c in built.checks}
    assert (means["resid-L2-345"] or 0) > 1.0, "the scripture latent fires on scripture"

    # the same features typed: the same builder, so the same file but for float rounding across processes
    typed = cli_in_process(capsys, "watch", "build", "--feature", f"resid-L2:{LATENT}", "--feature", "transcoder-L2:3",
                           "--texts-file", str(texts), "--name", "from list")  # fmt: skip
    assert typed.returncode == 0 and typed.stdout.startswith("format = 1"), typed.stderr
    again = load_watchlist("typed.toml", typed.stdout.encode())
    assert [(f.id, f.decoder_sha256) for f in again.features.values()] == [
        (f.id, f.decoder_sha256) for f in built.features.values()
    ]
    assert {c.feature: c.baseline_mean for c in again.checks} == pytest.approx(means, rel=1e-5)


def test_watch_build_refuses_a_bad_list_in_one_line_before_loading_a_model(tmp_path, capsys, monkeypatch):
    from tests.test_detectors import _no_torch

    user_db = tmp_path / "userdata.duckdb"
    _feature_list(user_db, "empty", [])
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    out = tmp_path / "w.toml"
    result = saescope("watch", "build", "--list", "nope", "--text", "x", "--out", str(out), env=_no_torch(tmp_path))
    assert (result.returncode, result.stderr) == (2, "error: there is no list named 'nope'\n")
    cases = [
        (["--list", "empty", "--text", "x"], "error: the list 'empty' has no features"),
        (["--list", "empty"], "give the texts the checks measure on"),
        (["--list", " ", "--text", "x"], "error: "),
    ]
    for args, message in cases:
        answer = cli_in_process(capsys, "watch", "build", *args, "--out", str(out))
        assert answer.returncode == 2 and message in answer.stderr and answer.stderr.count("\n") == 1, answer.stderr
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal (usage line, then the reason)
        cli_in_process(capsys, "watch", "build", "--list", "empty", "--feature", "resid-L2:3", "--text", "x")
    assert exited.value.code == 2 and "argument --feature: not allowed with argument --list" in capsys.readouterr().err
    assert not out.exists()
