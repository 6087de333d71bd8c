"""Evidence packs (issue 18, part 3): made from the demo atlas and a list in a real user-data file by the
CLI (subprocess), checked by ``evidence verify`` (intact, one changed byte, a missing or extra file,
right and wrong signing keys), the report read as a browser would (nothing fetched, user text inert),
bad input refused before any work, and the Lists page's button making a pack that verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analysis.atlas.reader import read_meta, sae_table
from analysis.governance.evidence_pack import sha256_file
from analysis.governance.evidence_pdf import find_chromium
from analysis.governance.evidence_verify import verify_pack
from analysis.paths import DEMO_ATLAS, REPO_ROOT
from dashboard.userdata import open_user_store
from tests.cli_run import cli_in_process
from tests.dashboard_app import by_label, page

LIST = "deception candidates"
HOSTILE_LABEL = '<script src="https://evil.example/a.js"></script> **bold**'
HOSTILE_DESCRIPTION = '<img src="http://evil.example/x.png"> <a href="https://evil.example">link</a>'


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )


def _hashes() -> dict[str, str]:
    saes = sae_table(DEMO_ATLAS)
    return dict(zip(saes["name"], saes["content_hash"]))


def _steering_record(hashes: dict[str, str]) -> dict:
    """What the Steer page records for a run (SteeringResult.to_record)."""
    default, steered = [" the", " end", "."], [' "', " she", " said"]
    return {
        "prompt": "And then",
        "prompt_tokens": ["<|endoftext|>", "And", " then"],
        "prompt_cut": 0,
        "method": "additive",
        "targets": [{"sae": "resid-L2", "latent": 17, "coefficient": 40.0}],
        "settings": {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "frequency_penalty": 1.0, "seed": 16},
        "default": {"ids": [262, 886, 13], "tokens": default, "text": "".join(default)},
        "steered": {"ids": [366, 673, 531], "tokens": steered, "text": "".join(steered)},
        "divergence": {"index": 0, "next_tokens": [{"text": ' "', "p_default": 0.02, "p_steered": 0.61}]},
        "seconds": 0.4,
        "interrupted": False,
        "model_hash": read_meta(DEMO_ATLAS)["model"]["content_hash"],
        "sae_hashes": {"resid-L2": hashes["resid-L2"]},
    }


def _graph_record() -> dict:
    """What the Graph page saves (library.graph_record): node-link data of a pruned graph."""
    nodes = [
        {"id": "embed@0", "kind": "embedding", "layer": -1, "position": 0, "token": "And", "influence": 0.2},
        {"id": "embed@1", "kind": "embedding", "layer": -1, "position": 1, "token": " then", "influence": 0.3},
        {
            "id": "feature/0/17@1",
            "kind": "feature",
            "layer": 0,
            "position": 1,
            "latent": 17,
            "transcoder": "transcoder-L0",
            "activation": 1.5,
            "label": "<b>quote</b>",
            "influence": 0.4,
        },
        {"id": "error/1@1", "kind": "error", "layer": 1, "position": 1, "influence": 0.05},
        {"id": "logit/366", "kind": "logit", "layer": 4, "position": 1, "token": ' "', "probability": 0.3},
    ]
    links = [
        {"source": "embed@1", "target": "feature/0/17@1", "weight": 2.0},
        {"source": "embed@0", "target": "feature/0/17@1", "weight": -0.5},
        {"source": "feature/0/17@1", "target": "logit/366", "weight": 1.2},
        {"source": "error/1@1", "target": "logit/366", "weight": 0.1},
    ]
    graph = {"prompt": "And then", "tokens": ["And", " then"], "replacement_score": 0.71, "completeness_score": 0.9}
    return {
        "format": "saescope-graph/1",
        "graph": {"directed": True, "multigraph": False, "graph": graph, "nodes": nodes, "links": links},
        "state": {},
        "view": {"node_threshold": 0.8, "edge_threshold": 0.98},
    }


def make_user_data(path: Path) -> dict[str, str]:
    """A list of three features (one from an SAE this atlas lacks), reviewed by two people, one saved
    graph and one steering run, through the user store as the dashboard writes them."""
    hashes = _hashes()
    store = open_user_store(path)
    try:
        store.create_list(LIST, "alice", HOSTILE_DESCRIPTION)
        store.add_to_list(LIST, hashes["resid-L2"], "resid-L2", 17, "alice", "fires on closing quotes")
        store.add_to_list(LIST, hashes["transcoder-L0"], "transcoder-L0", 17, "alice")
        store.add_to_list(LIST, "f" * 64, "retired-sae", 5, "bob", "from the old SAE")
        store.annotate(hashes["resid-L2"], "resid-L2", 17, "bob", status="interpretable", label=HOSTILE_LABEL)
        store.annotate(hashes["resid-L2"], "resid-L2", 17, "alice", notes="checked [x](https://evil.example)")
        run = store.record_experiment("steering", "alice", "And then", "m" * 64, _steering_record(hashes))
        graph = store.record_experiment("graph", "bob", "quote circuit", "m" * 64, _graph_record())
    finally:
        store.close()
    return {"run": run, "graph": graph}


def _attachments(folder: Path) -> tuple[Path, str, Path]:
    """A watchlist run and a trained detector's files, written by the watch and detector commands'
    own writers (the numbers are made up: the pack only carries them)."""
    from datetime import UTC, datetime

    from analysis.governance.detector_files import FORMAT, write_detector
    from analysis.governance.watch_run import CheckResult, record_run
    from analysis.governance.watchlist_file import Watchlist

    runs = folder / "watch_runs"
    watchlist = Watchlist(folder / "quotes.toml", "ab" * 32, "quotes", "dialogue features", {}, ())
    results = [
        CheckResult("dialogue", "quotes", "fires_at_least", "passed", "max activation per text ≥ 1 on 3 of 3 texts"),
        CheckResult("code", "quotes", "mean_rise_at_most", "failed", "mean rose by 0.4 (allowed 0.1)"),
    ]
    models = {"model": {"spec": "finetuned", "content_hash": "cd" * 32}}
    record = record_run(watchlist, results, {}, models, {}, datetime.now(UTC), 1.5, runs, "carol")
    detector = folder / "detector"
    detector.mkdir()
    spec = {
        "format": FORMAT,
        "model": {"spec": "data/demo/model", "content_hash": "ef" * 32},
        "sae": {"name": "resid-L2", "spec": "data/demo/saes/resid-L2", "content_hash": "01" * 32},
        "hook": "blocks.2.hook_resid_pre",
        "pool": "max",
        "features": [{"latent": 17, "weight": 1.25, "label": "put, let"}, {"latent": 3, "weight": -0.5}],
        "intercept": -2.0,
        "threshold": 0.5,
    }
    metrics = {
        "format": FORMAT,
        "methods": {
            "detector": {"precision": 0.93, "recall": 0.88, "f1": 0.904, "auroc": 0.97, "features": 2},
            "dense_probe": {"precision": 0.95, "recall": 0.9, "f1": 0.924, "auroc": 0.98, "features": 256},
            "regex": {"precision": 0.7, "recall": 0.6, "f1": 0.646, "auroc": 0.65},
        },
        "split": {"test": 250, "test_positives": 125},
        "cost": {"detector_ms_per_1000_texts": 49632.0, "full_forward_ms_per_1000_texts": 87458.0},
    }
    write_detector(detector, spec, metrics)
    return runs, record["run_id"], detector


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict:
    """One signed pack with everything attached, made by the CLI, and the key pair it was signed with."""
    folder = tmp_path_factory.mktemp("evidence")
    user_db = folder / "userdata.duckdb"
    ids = make_user_data(user_db)
    runs, run_id, detector = _attachments(folder)
    keys = run_cli("evidence", "keygen", "--out", str(folder / "keys"))
    assert keys.returncode == 0, keys.stderr
    pack = folder / "pack.zip"
    args = ["evidence", "--user-db", str(user_db), "--list", LIST, "--graph", ids["graph"][:8], "--run", ids["run"]]
    args += ["--watch", run_id, "--watch-runs-dir", str(runs), "--detector", str(detector), "--by", "carol"]
    args += ["--sign-key", str(folder / "keys" / "evidence-signing-key.pem"), "--out", str(pack)]
    args += [] if find_chromium() else ["--no-pdf"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert f"evidence pack of list {LIST!r}: 3 features" in result.stdout
    return {
        "pack": pack,
        "folder": folder,
        "user_db": user_db,
        "ids": ids,
        "run_id": run_id,
        "public": folder / "keys" / "evidence-signing-key.pub.pem",
    }


def _member(pack: Path, name: str) -> bytes:
    with zipfile.ZipFile(pack) as archive:
        return archive.read(name)


def test_the_pack_holds_report_data_manifest_and_checksums(made):
    pack = made["pack"]
    with zipfile.ZipFile(pack) as archive:
        names = set(archive.namelist())
    expected = {"report.html", "evidence.json", "manifest.json", "SHA256SUMS", "SHA256SUMS.sig"}
    assert names == expected | ({"report.pdf"} if find_chromium() else set())
    data = json.loads(_member(pack, "evidence.json"))
    resid, transcoder, retired = data["features"]
    assert (resid["sae_name"], resid["latent"], resid["annotation"]["status"]) == ("resid-L2", 17, "interpretable")
    assert resid["annotation"]["label"] == HOSTILE_LABEL and resid["statistics"]["fire_count"] > 0
    assert resid["examples"] and len(resid["examples"][0]["tokens"]) == len(resid["examples"][0]["activations"])
    assert [row["action"] for row in resid["audit"]] == ["list_add", "edit", "edit", "edit"]
    assert {row["reviewer"] for row in resid["audit"]} == {"alice", "bob"}
    assert transcoder["annotation"]["status"] == "unreviewed" and transcoder["statistics"] is not None
    assert retired["in_atlas"] is False and retired["statistics"] is None and retired["list_note"] == "from the old SAE"
    assert [g["id"] for g in data["graphs"]] == [made["ids"]["graph"]]
    assert [r["id"] for r in data["steering_runs"]] == [made["ids"]["run"]]
    assert data["watch"]["passed"] is False and data["detector"]["metrics"]["methods"]["detector"]["f1"] == 0.904
    report = _member(pack, "report.html").decode()
    assert "mean rose by 0.4 (allowed 0.1)" in report and '<span class="fail">FAIL</span>' in report
    assert "dense_probe" in report and "49,632 ms per 1,000 texts" in report
    manifest = json.loads(_member(pack, "manifest.json"))
    meta = read_meta(DEMO_ATLAS)
    assert manifest["model"]["content_hash"] == meta["model"]["content_hash"]
    assert manifest["atlas"]["sha256"] == sha256_file(DEMO_ATLAS)
    assert {s["name"]: s["content_hash"] for s in manifest["saes"]} == {
        name: h for name, h in _hashes().items() if name in ("resid-L2", "transcoder-L0")
    }
    assert manifest["generated_by"] == "carol" and manifest["libraries"]["duckdb"]
    assert manifest["signing_key"] and manifest["attachments"]["watch_run"]["file"] == f"{made['run_id']}.json"


@pytest.mark.browser
def test_the_pdf_is_printed_by_chromium(made):
    if find_chromium() is None:
        pytest.skip("no Chromium to print with")
    pdf = _member(made["pack"], "report.pdf")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000


class _Resources(HTMLParser):
    """Every tag, and every attribute or style that would make a browser fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.loads: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "poster", "action", "xlink:href") and value:
                self.loads.append(f"{tag} {name}={value}")
            if name == "style" and value and "url(" in value:
                self.loads.append(f"{tag} style={value}")

    def handle_data(self, data):
        self.text.append(data)


def test_the_report_fetches_nothing_and_shows_user_text_as_text(made):
    html = _member(made["pack"], "report.html").decode()
    parsed = _Resources()
    parsed.feed(html)
    assert parsed.loads == []  # no src/href at all, so nothing http(s), protocol-relative or local is fetched
    assert "script" not in parsed.tags and "img" not in parsed.tags and "link" not in parsed.tags
    assert "@import" not in html and "url(" not in html
    text = "".join(parsed.text)
    assert HOSTILE_LABEL in text and "<img src=" in text  # shown literally, as text
    for heading in ("What was examined", "By whom", "What was found", "What was tested by intervention"):
        assert heading in text
    assert "Detector" in text and "Watchlist run" in text and "FAIL" in text
    assert "quote circuit" in text and "retired-sae #5" in text and "svg" in parsed.tags


def _verify(capsys: pytest.CaptureFixture[str], pack: Path, *extra: str) -> subprocess.CompletedProcess:
    """``evidence verify`` in this process (its subprocess is the intact pack's, the first below)."""
    return cli_in_process(capsys, "evidence", "verify", str(pack), *extra)


def _problems(result: subprocess.CompletedProcess) -> list[str]:
    """verify's lines naming a file (the others are notes, such as "signed; pass --public-key")."""
    return [line for line in result.stdout.splitlines() if line.startswith(("changed:", "missing:", "extra:"))]


def test_an_intact_pack_verifies_with_the_right_key_and_not_another(made, tmp_path, capsys):
    """The verify a user runs (a subprocess); a second key pair and the wrong key's verify in this process."""
    result = run_cli("evidence", "verify", str(made["pack"]), "--public-key", str(made["public"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "signature good" in result.stdout
    other = cli_in_process(capsys, "evidence", "keygen", "--out", str(tmp_path))
    assert other.returncode == 0
    wrong = _verify(capsys, made["pack"], "--public-key", str(tmp_path / "evidence-signing-key.pub.pem"))
    assert wrong.returncode == 1 and "SHA256SUMS.sig does not match" in wrong.stdout


def _rewritten(pack: Path, out: Path, change) -> Path:
    """A copy of ``pack`` whose members went through ``change(name, content)`` (None drops one)."""
    with zipfile.ZipFile(pack) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = change(info.filename, source.read(info))
            if content is not None:
                target.writestr(info.filename, content)
    return out


def test_one_changed_byte_inside_a_file_is_named(made, tmp_path, capsys):
    def flip(name: str, content: bytes) -> bytes:
        if name != "evidence.json":
            return content
        return content[:100] + bytes([content[100] ^ 1]) + content[101:]

    changed = _verify(capsys, _rewritten(made["pack"], tmp_path / "changed.zip", flip))
    assert changed.returncode == 1 and _problems(changed) == ["changed: evidence.json"]


def test_one_changed_byte_of_the_archive_itself_is_named(made, tmp_path, capsys):
    """A byte flipped in the stored (compressed) data of report.html, not rewritten through zipfile."""
    raw = bytearray(made["pack"].read_bytes())
    with zipfile.ZipFile(made["pack"]) as archive:
        info = archive.getinfo("report.html")
    name_length = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    data_start = info.header_offset + 30 + name_length + extra_length
    raw[data_start + info.compress_size // 2] ^= 0x10
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(raw))
    result = _verify(capsys, damaged)
    assert result.returncode == 1 and _problems(result) == ["changed: report.html"]


def test_a_missing_and_an_extra_file_are_named(made, tmp_path, capsys):
    def swap(name: str, content: bytes) -> bytes | None:
        return None if name == "manifest.json" else content

    missing = _rewritten(made["pack"], tmp_path / "missing.zip", swap)
    with zipfile.ZipFile(missing, "a") as archive:
        archive.writestr("notes.txt", "added later")
    result = _verify(capsys, missing)
    assert result.returncode == 1 and _problems(result) == ["missing: manifest.json", "extra: notes.txt"]


BAD_INPUT = [
    (["--list", "no such list"], "there is no list named 'no such list'"),
    (["--list", LIST, "--graph", "0000dead"], "there is no saved graph with id '0000dead'"),
    (["--list", LIST, "--run", "0000dead"], "there is no steering run with id '0000dead'"),
    (["--list", LIST, "--watch", "run-9999"], "there is no watch run 'run-9999'"),
    (
        ["--list", LIST, "--detector", "/nonexistent/detector"],
        "the detector folder /nonexistent/detector does not exist",
    ),
    (["--list", LIST, "--atlas", "/nonexistent/atlas.duckdb"], "/nonexistent/atlas.duckdb"),
    (["--list", LIST, "--sign-key", "/nonexistent/key.pem"], "cannot read the signing key /nonexistent/key.pem"),
]


def test_bad_input_is_one_line_and_exit_2_before_any_work(made, tmp_path):
    """Every case through the CLI's own main() in one fresh interpreter (one start instead of ten),
    then a good pack in the same interpreter: none of it imports torch."""
    cases = [
        ["evidence", "--user-db", str(made["user_db"]), *args, "--out", str(tmp_path / "p.zip")]
        for args, _ in BAD_INPUT
    ]
    cases += [
        ["evidence", "--user-db", str(made["user_db"]), "--list", LIST, "--out", "/proc/pack.zip"],
        ["evidence", "verify", str(tmp_path / "absent.zip")],
        ["evidence", "verify", str(DEMO_ATLAS)],
        [
            "evidence",
            "verify",
            str(made["pack"]),
            "--public-key",
            str(made["folder"] / "keys" / "evidence-signing-key.pem"),
        ],
    ]
    good = [
        "evidence",
        "--user-db",
        str(made["user_db"]),
        "--list",
        LIST,
        "--no-pdf",
        "--out",
        str(tmp_path / "good.zip"),
    ]
    code = f"""
import contextlib, io, json, sys
from analysis.cli import main
out = []
for argv in {cases!r}:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        out.append([main(argv), err.getvalue()])
with contextlib.redirect_stdout(io.StringIO()):
    good = main({good!r})
print(json.dumps(out + [[good, "torch" in sys.modules]]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    *answers, (good_code, torch_imported) = json.loads(result.stdout.splitlines()[-1])
    assert good_code == 0 and not torch_imported and verify_pack(tmp_path / "good.zip").ok
    expected = [message for _, message in BAD_INPUT] + [
        "cannot write in /proc",
        "absent.zip does not exist",
        "is not a zip archive",
        "is not a PEM public key",
    ]
    for (code_, stderr), message in zip(answers, expected):
        assert code_ == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        assert message in stderr, stderr
    assert not (tmp_path / "p.zip").exists()


@pytest.mark.slow
def test_the_lists_page_button_makes_a_pack_that_verifies(user_db, tmp_path, monkeypatch):
    ids = make_user_data(user_db)
    monkeypatch.setenv("SAESCOPE_CHROMIUM", str(tmp_path / "no-chromium"))  # the HTML-only path; the CLI test prints
    app = page("pages/4_Lists.py", list=LIST)
    assert not app.exception
    by_label(app.multiselect, "Attach saved graphs").select(ids["graph"])
    app.run()
    by_label(app.button, "Make evidence pack").click().run(timeout=120)
    assert not app.exception and not app.error, [e.value for e in app.error]
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Download evidence pack (zip)" in labels
    content, features, files = app.session_state[f"evidence_pack_{LIST}"]
    assert features == 3 and "report.pdf" not in files
    pack = tmp_path / "from-page.zip"
    pack.write_bytes(content)
    assert verify_pack(pack).ok
    data = json.loads(_member(pack, "evidence.json"))
    assert [g["id"] for g in data["graphs"]] == [ids["graph"]] and data["generated_by"]
