"""Feature detectors (issue 18, part 1): the seeded PII data, ``detector train`` and ``detector run``
end to end through the CLI on the demo model and SAE, their bad input, and the Detectors page."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from analysis.governance.pii_data import generate
from analysis.governance.pii_regex import find_pii
from analysis.paths import REPO_ROOT
from dashboard.userdata import open_user_store
from tests.cli_run import cli_in_process
from tests.dashboard_app import by_label, html_bodies, page


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", "detector", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO_ROOT,
        env=env,
    )


def test_demo_data_is_the_same_for_a_seed_and_marks_the_pii(tmp_path, capsys):
    """The first run is a subprocess; the repeats run in this process (the same seed, the same bytes)."""
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    result = cli("demo-data", "--out", str(first), "--n", "60", "--seed", "3")
    assert result.returncode == 0, result.stderr
    for path, seed in ((second, "3"), (other, "4")):
        result = cli_in_process(capsys, "detector", "demo-data", "--out", str(path), "--n", "60", "--seed", seed)
        assert result.returncode == 0, result.stderr
    assert first.read_bytes() == second.read_bytes() != other.read_bytes()
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) == 60 and sum(r["label"] for r in rows) == 30
    for row in rows:
        assert bool(row["spans"]) == bool(row["label"])
        for start, end in row["spans"]:
            value = row["text"][start:end]
            assert value.strip() == value and len(value) >= 3
            if row["kind"] == "email":
                assert [kind for kind, *_ in find_pii(value)] == ["email"]
    assert len({r["locale"] for r in rows}) >= 4


def test_the_regexes_take_checksummed_numbers_only():
    assert [k for k, *_ in find_pii("card 4111 1111 1111 1111 here")] == ["card"]
    assert find_pii("card 4111 1111 1111 1112 here") == []  # fails Luhn
    assert [k for k, *_ in find_pii("IBAN DE89 3704 0044 0532 0130 00.")] == ["iban"]
    assert find_pii("at 0xffff888003a1c000 in Genesis 3:16") == []


def test_token_truth_and_threshold_on_a_hand_made_case():
    from analysis.governance.detector_files import LabelledText
    from analysis.governance.detector_tokens import best_threshold, known_rows, overlap_labels, token_metrics

    offsets = [(0, 4), (4, 5), (5, 10), (10, 10), (10, 12)]
    assert overlap_labels(offsets, [(4, 5)]).tolist() == [0, 1, 0, 0, 0]  # touching ends do not overlap
    assert overlap_labels(offsets, [(3, 6), (11, 20)]).tolist() == [1, 1, 1, 0, 1]
    assert overlap_labels(offsets, []).tolist() == [0] * 5
    rows = [LabelledText("a", 1, ((0, 1),)), LabelledText("b", 1), LabelledText("c", 0)]
    assert known_rows(rows, [0, 1, 2]) == [0, 2], "a positive row without spans says not which tokens"
    # F1 by threshold on these training tokens: 0.35 -> P 2/3 R 1 (0.8); 0.4 -> 0.5; 0.8 -> P 1 R 0.5 (0.667)
    labels, scores = np.array([0, 0, 1, 1, 0]), np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    assert best_threshold(labels, scores) == pytest.approx(0.35)
    test_labels = np.array([1, 1, 0, 0, 1, 0])
    test_scores = {"probe": np.array([0.9, 0.3, 0.36, 0.1, 0.5, 0.2]), "rule": np.array([1.0, 0, 0, 0, 1, 1])}
    methods = token_metrics((labels, {"probe": scores}), (test_labels, test_scores), {"rule": 0.5})
    probe, rule = methods["probe"], methods["rule"]
    assert (probe["threshold"], probe["threshold_from"]) == (pytest.approx(0.35), "train split")
    assert (probe["tp"], probe["fp"], probe["fn"]) == (2, 1, 1)  # 0.9, 0.5 hit; 0.36 false; 0.3 missed
    assert probe["precision"] == pytest.approx(2 / 3) and probe["f1"] == pytest.approx(2 / 3)
    assert probe["auroc"] == pytest.approx(8 / 9)
    assert (rule["threshold_from"], rule["tp"], rule["fp"], rule["fn"]) == ("fixed", 2, 1, 1)


def test_token_offsets_follow_the_models_tokens_and_the_cut():
    from analysis.governance.detector_tokens import overlap_labels, token_offsets
    from analysis.model_loading import load_tokenizer

    tokenizer = load_tokenizer(str(REPO_ROOT / "data" / "demo" / "model"))
    text = "Write to anna.schmidt@example.org today."
    start = text.index("anna")
    span = (start, text.index(" today"))
    offsets = token_offsets(tokenizer, text, 0)
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert offsets is not None and len(offsets) == len(ids)
    flagged = overlap_labels(offsets, [span])
    inside = "".join(tokenizer.decode([i]) for i, f in zip(ids, flagged) if f)
    assert inside.strip() == text[span[0] : span[1]], inside
    assert token_offsets(tokenizer, text, 3) == offsets[3:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A detector trained through the CLI on 400 generated rows (a few cost texts to keep it quick;
    fewer rows leave its per-token scores no better than flagging every token)."""
    folder = tmp_path_factory.mktemp("detector")
    data = folder / "pii.jsonl"
    rows = generate(400, 5)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("train", "--data", str(data), "--out", str(folder / "det"), "--cost-texts", "16", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "detector" in result.stdout and "dense_probe" in result.stdout and "regex" in result.stdout
    assert "Feature?atlas=demo&sae=resid-L2&latent=" in result.stdout
    assert "per-token, held-out split (" in result.stdout and "(train split)" in result.stdout
    return folder / "det", rows


@pytest.mark.model
@pytest.mark.slow
def test_train_writes_a_detector_and_metrics_that_sklearn_confirms(trained):
    folder, rows = trained
    detector = json.loads((folder / "detector.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert detector["model"]["spec"] == "data/demo/model" and detector["sae"]["spec"] == "data/demo/saes/resid-L2"
    assert len(detector["sae"]["content_hash"]) == 64 and detector["hook"] == "blocks.2.hook_resid_pre"
    assert {"torch", "scikit-learn", "sae-lens"} <= set(detector["library_versions"])
    assert detector["features"] and all(f["weight"] != 0 for f in detector["features"])
    first = detector["features"][0]
    assert first["url"] == f"http://localhost:8501/Feature?atlas=demo&sae=resid-L2&latent={first['latent']}"
    predictions = metrics["predictions"]
    assert predictions["labels"] == [rows[i]["label"] for i in predictions["rows"]]
    assert metrics["split"]["test"] == len(predictions["rows"]) == 100
    for name in ("detector", "dense_probe", "regex"):
        scores = predictions["scores"][name]
        predicted = [int(s >= 0.5) for s in scores]
        recorded = metrics["methods"][name]
        assert recorded["precision"] == pytest.approx(
            precision_score(predictions["labels"], predicted, zero_division=0)  # pyright: ignore[reportArgumentType]
        )
        assert recorded["recall"] == pytest.approx(recall_score(predictions["labels"], predicted))
        assert recorded["f1"] == pytest.approx(f1_score(predictions["labels"], predicted))
        assert recorded["auroc"] == pytest.approx(roc_auc_score(predictions["labels"], scores))
    cost = metrics["cost"]
    assert cost["texts"] == 16 and cost["blocks_run"] == 2 and cost["n_layers"] == 4
    assert cost["detector_ms_per_1000_texts"] > 0 and cost["full_forward_ms_per_1000_texts"] > 0


@pytest.mark.model
@pytest.mark.slow
def test_per_token_scores_find_the_spans_better_than_flagging_every_token(trained):
    """Measured on this fixture (400 rows, seed 5, split seed 1): token F1 detector 0.256, dense probe
    0.255, regexes 0.706; flagging every token 0.155. The floors leave a margin for other platforms."""
    folder, rows = trained
    metrics = json.loads((folder / "metrics.json").read_text())
    tokens = metrics["tokens"]
    assert metrics["tokens_skipped"] is None and set(tokens["methods"]) == {"detector", "dense_probe", "regex"}
    assert tokens["rows"]["test"] == len(metrics["predictions"]["rows"]), "every held-out row has spans or label 0"
    counts = tokens["tokens"]
    base = counts["test_positive"] / counts["test"]
    every_token_f1 = 2 * base / (1 + base)
    for name, row in tokens["methods"].items():
        assert (
            row["tp"] + row["fn"] == counts["test_positive"]
            and sum(row[k] for k in "tp fp fn tn".split()) == counts["test"]
        )
        assert row["threshold_from"] == ("fixed" if name == "regex" else "train split")
    detector = tokens["methods"]["detector"]
    assert detector["f1"] > max(0.2, every_token_f1 + 0.05) and detector["auroc"] > 0.62, detector
    assert tokens["methods"]["regex"]["precision"] > 0.9 and tokens["methods"]["regex"]["f1"] > 0.6


@pytest.mark.model
@pytest.mark.slow
def test_batched_token_scores_are_what_detector_run_shows(trained, live):
    """The token-level evaluation scores tokens as ``detector run`` and the page do (one formula)."""
    from analysis.governance.detector_encode import token_scores
    from analysis.governance.detector_run import score_text

    folder, rows = trained
    detector = json.loads((folder / "detector.json").read_text())
    probe = (
        np.array([f["latent"] for f in detector["features"]]),
        np.array([f["weight"] for f in detector["features"]]),
        detector["intercept"],
    )
    texts = [rows[i]["text"] for i in range(3)]
    batched = token_scores(live, "resid-L2", texts, probe)["detector"]
    for text, scores in zip(texts, batched):
        shown = score_text(live, detector, "resid-L2", text)
        assert shown.has_bos and scores == pytest.approx(shown.token_scores[1:], abs=1e-5)


@pytest.mark.model
@pytest.mark.slow
def test_run_scores_texts_and_tokens_as_training_scored_them(trained, tmp_path, capsys):
    """``detector run --data`` as a subprocess, ``--text`` in this process."""
    folder, rows = trained
    metrics = json.loads((folder / "metrics.json").read_text())
    picked = metrics["predictions"]["rows"][:3]
    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": rows[i]["text"]}) + "\n" for i in picked))
    result = cli("run", str(folder), "--data", str(data), "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    for index, scored in zip(range(3), results):
        assert scored["score"] == pytest.approx(metrics["predictions"]["scores"]["detector"][index], abs=1e-4)
        assert scored["tokens"][0]["token"] == "<|endoftext|>" and len(scored["tokens"]) > 5
        assert all(0 <= t["score"] <= 1 for t in scored["tokens"])
    email = "Questions go to anna.schmidt@example.org by Friday."
    result = cli_in_process(capsys, "detector", "run", str(folder), "--text", email)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(("0.", "1.")) and "tokens:" in result.stdout


def _no_torch(tmp_path: Path) -> dict:
    """An environment in which importing torch fails: bad input must be refused before any model loads."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ImportError('torch was imported before the input was checked')\n"
    )
    return {**__import__("os").environ, "PYTHONPATH": str(fake)}


BAD_DATA = {
    "not json": ("{text: 1}\n", "line 1 is not JSON"),
    "no label": ('{"text": "hello"}\n', "has no 'label'"),
    "bad label": ('{"text": "hello", "label": 2}\n', "'label' must be 0, 1"),
    "empty text": ('{"text": " ", "label": 1}\n', "'text' must be a non-empty string"),
    "bad span": ('{"text": "hello", "label": 1, "spans": [[3, 99]]}\n', "span [3, 99]"),
    "one class": (
        "".join(json.dumps({"text": f"t{i}", "label": 1}) + "\n" for i in range(40)),
        "only 0 rows have label 0",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_is_one_line_before_any_model_loads(case, tmp_path):
    content, message = BAD_DATA[case]
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    result = cli("train", "--data", str(data), "--out", str(tmp_path / "out"), env=_no_torch(tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_bad_arguments_are_one_line_before_any_model_loads(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in generate(40, 0)))
    (tmp_path / "a-file").write_text("x")
    env = _no_torch(tmp_path)
    cases = [
        (["train", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")], "no such file"),
        (["train", "--data", str(good), "--out", str(tmp_path / "a-file")], "is a file"),
        (["train", "--data", str(good), "--out", str(tmp_path / "o"), "--sae", "data/demo/saes"], "holds 5 SAEs"),
        (["train", "--data", str(good), "--out", str(tmp_path / "o"), "--test-fraction", "2"], "--test-fraction"),
        (["train", "--data", str(good), "--out", str(tmp_path / "o"), "--pool", "sum"], "invalid choice"),
        (["run", str(tmp_path), "--text", "hi"], "has no detector.json"),
        (["run", str(tmp_path)], "one of the arguments --text --data is required"),
        (["demo-data", "--out", str(tmp_path / "d.jsonl"), "--n", "1"], "--n"),
    ]
    for args, message in cases:
        result = cli(*args, env=env)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr


DETECTORS = "pages/8_Detectors.py"


def _train_on_page(app):
    by_label(app.number_input, "Texts to time").set_value(8)
    by_label(app.button, "Train detector").click().run(timeout=900)
    assert not app.exception and not app.error, (app.exception, [e.value for e in app.error])
    return app


@pytest.mark.model
@pytest.mark.slow
def test_the_page_trains_from_an_upload_and_shows_per_token_scores(user_db):
    app = page(DETECTORS)
    assert not app.exception and not app.error
    app.file_uploader[0].set_value(("bad.jsonl", b'{"text": "x", "label": 7}\n', "application/json")).run()
    assert any("'label' must be 0, 1" in e.value for e in app.error)
    upload = "".join(json.dumps(r) + "\n" for r in generate(80, 2)).encode()
    app.file_uploader[0].set_value(("pii.jsonl", upload, "application/json")).run()
    assert any("80 texts: 40 labelled 1" in c.value for c in app.caption)
    _train_on_page(app)
    methods = app.dataframe[0].value
    assert len(methods) == 3 and set(methods.columns) >= {"precision", "recall", "F1", "AUROC"}
    assert methods["AUROC"].between(0, 1).all()
    tokens = app.dataframe[1].value
    assert list(tokens["method"]) == list(methods["method"]) and tokens["token F1"].between(0, 1).all()
    assert any(c.value.startswith("Per token, against the spans:") for c in app.caption)
    features = app.dataframe[2].value
    assert features["feature"].iloc[0] == f"Feature?atlas=demo&sae=resid-L2&latent={features['latent'].iloc[0]}"
    by_label(app.text_area, "Text to score").set_value("<script>alert(1)</script> mail anna@example.org")
    by_label(app.button, "Score").click().run(timeout=300)
    assert not app.exception and not app.error
    assert any(c.value.startswith("Text score ") for c in app.caption)
    bodies = html_bodies(app)
    assert "<script" not in bodies and "&lt;" in bodies and "script" in bodies, "tokens are escaped text"


@pytest.mark.model
@pytest.mark.slow
def test_the_page_trains_from_two_feature_lists(user_db):
    store = open_user_store(user_db)
    sae_hash = atlas_sae_hash("resid-L2")
    for name, latents in (("fires", (3, 9, 17)), ("quiet", (40, 41, 42))):
        store.create_list(name, "dana")
        for latent in latents:
            store.add_to_list(name, sae_hash, "resid-L2", latent, "dana")
    app = page(DETECTORS)
    by_label(app.radio, "Train from").set_value("Two feature lists").run()
    assert by_label(app.selectbox, "Fires on: the examples of").value == "quiet"  # newest list first
    by_label(app.selectbox, "Fires on: the examples of").set_value("fires").run()
    by_label(app.selectbox, "Stays quiet on: the examples of").set_value("quiet").run()
    [counts] = [c.value for c in app.caption if " texts: " in c.value]
    assert int(counts.split()[0]) > 40
    by_label(app.toggle, "PII regex baseline").set_value(False)
    _train_on_page(app)
    assert len(app.dataframe[0].value) == 2, "detector and dense probe; no regex for this task"
    assert "Per token: not scored (no row has spans)." in [c.value for c in app.caption]


def atlas_sae_hash(name: str) -> str:
    import duckdb

    from analysis.paths import DEMO_ATLAS

    with duckdb.connect(str(DEMO_ATLAS), read_only=True) as connection:
        row = connection.execute("SELECT content_hash FROM saes WHERE name = ?", [name]).fetchone()
    assert row is not None
    return row[0]
