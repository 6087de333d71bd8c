"""`python -m analysis precompute` and `merge` on the demo bundle: real model, real SAEs, real DuckDB files."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from analysis.atlas.contract import SCHEMA_VERSION
from analysis.atlas.reader import AtlasError, open_atlas, read_meta
from analysis.paths import DEMO_DIR, REPO_ROOT
from tests.atlas_rows import one_row
from tests.cli_run import cli_in_process

pytestmark = [pytest.mark.model, pytest.mark.slow]

SAE = str(DEMO_DIR / "saes" / "transcoder-L0")
TOKENS = 16 * 128


def analysis(*args: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    """Run the CLI; ``file_limit`` makes any write past that many bytes fail, as on a full disk."""
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        preexec_fn=None if file_limit is None else lambda: _limit_file_size(file_limit),
    )


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def precompute_args(out: Path, *extra: str) -> list[str]:
    return ["precompute", "--sae", SAE, "--tokens", str(TOKENS), "--batch", "4", "--out", str(out), *extra]


def precompute(out: Path, *extra: str, file_limit: int | None = None) -> subprocess.CompletedProcess:
    return analysis(*precompute_args(out, *extra), file_limit=file_limit)


@pytest.fixture(scope="module")
def atlas(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("atlas") / "atlas.duckdb"
    result = precompute(out)
    assert result.returncode == 0, result.stderr
    assert "2,048 tokens, 1 SAEs, 512 features" in result.stdout
    assert len(result.stdout.splitlines()) == 1  # the result on stdout; progress and log lines on stderr
    assert "corpus demo: " in result.stderr and f"writing {out}" in result.stderr
    return out


def table(path: Path, sql: str) -> list[tuple]:
    connection = open_atlas(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def test_atlas_records_the_run_and_every_latent(atlas):
    connection = open_atlas(atlas)
    meta = read_meta(connection)
    assert meta["schema_version"] == SCHEMA_VERSION and meta["tokens"] == TOKENS and meta["context"] == 128
    assert meta["saes"][0]["hook_name"] == "blocks.0.ln2.hook_normalized" and len(meta["saes"][0]["content_hash"]) == 64
    assert one_row(connection, "SELECT count(*) FROM features")[0] == 512
    firing = one_row(connection, "SELECT count(*) FROM features WHERE fire_count > 0")[0]
    labelled = one_row(connection, "SELECT count(*) FROM features WHERE label <> '' AND label_source = 'auto'")[0]
    assert 0 < labelled <= firing
    # the top example of every firing latent holds its max, at the stored position of a stored window
    rows = connection.execute(
        "SELECT f.max_act, e.value, e.act_values[list_position(e.act_positions, e.position)] FROM features f "
        "JOIN examples e USING (sae, latent) WHERE e.kind = 'top' AND e.rank = 0"
    ).fetchall()
    assert len(rows) == firing and all(m == v == a for m, v, a in rows)
    # interval samples keep float16 activations, readable in SQL through the atlas's own macro
    samples = connection.execute(
        "SELECT value, example_acts(act_values, act_values_f16)[list_position(act_positions, position)] "
        "FROM examples WHERE kind = 'interval'"
    ).fetchall()
    assert samples and all(abs(a - v) <= v * 2**-11 for v, a in samples)
    specials = one_row(
        connection,
        "SELECT count(*) FROM examples e JOIN windows w USING (window_id) "
        "WHERE w.tokens[e.position + 1] IN (8190, 8191)",
    )[0]
    assert specials == 0
    # the label's firing tokens are stored as ids, and each label word is findable in label_terms
    for latent, label, top_tokens in connection.execute(
        "SELECT latent, label, top_tokens FROM features WHERE label <> '' LIMIT 20"
    ).fetchall():
        texts = [one_row(connection, "SELECT text FROM tokens WHERE token = ?", [t])[0] for t in top_tokens]
        assert label.startswith("fires on ") and 1 <= len(top_tokens) <= 3
        words = {w.lower() for text in texts for w in re.findall(r"\w+", text)}
        terms = {t for (t,) in connection.execute("SELECT term FROM label_terms WHERE latent = ?", [latent]).fetchall()}
        assert words <= terms and ("promotes" not in terms or "promotes" in words)
    # every neighbour row carries the other latent's label
    mismatched = one_row(
        connection,
        "SELECT count(*) FROM neighbours g JOIN features f ON f.sae = g.other_sae AND f.latent = g.other_latent "
        "WHERE g.other_label <> f.label",
    )[0]
    assert mismatched == 0
    connection.close()


def test_sharded_runs_merge_into_the_single_pass_atlas(atlas, tmp_path, capsys):
    """The shards and the merges run in this process (the atlas fixture runs the CLI as a subprocess);
    the merge on a full disk runs as one, under its file-size limit."""
    parts = [tmp_path / f"part{i}.duckdb" for i in range(2)]
    for i, part in enumerate(parts):
        result = cli_in_process(capsys, *precompute_args(part, "--shard", f"{i}/2"))
        assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged.duckdb"
    full_disk = analysis("merge", str(parts[1]), str(parts[0]), "--out", str(merged), file_limit=2**20)
    assert full_disk.returncode == 2 and "could not write the atlas" in full_disk.stderr, full_disk.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part0.duckdb", "part1.duckdb"]  # nothing half-written
    result = cli_in_process(capsys, "merge", str(parts[1]), str(parts[0]), "--out", str(merged))
    assert result.returncode == 0, result.stderr
    for sql in (
        "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY latent",
        "SELECT * FROM examples ORDER BY latent, kind, interval_index, rank",
        "SELECT * FROM tokens ORDER BY token",
        "SELECT * FROM windows ORDER BY window_id",
        "SELECT * EXCLUDE (quality_sums, explained_variance, ce_loss_clean, ce_loss_with_sae, "
        "ce_loss_zero_ablation, ce_loss_recovered) FROM saes",
    ):
        assert table(merged, sql) == table(atlas, sql), sql
    again = cli_in_process(capsys, "merge", str(parts[0]), str(parts[0]), "--out", str(tmp_path / "twice.duckdb"))
    assert again.returncode == 2 and "a file is given twice" in again.stderr


def test_latent_ranges_of_window_shards_merge_into_the_single_pass_atlas(atlas, tmp_path, capsys):
    """Windows 0/2, 1/2 × latents 0/2, 1/2 (in this process, as the merge refusals below), merged in
    any order; a merge that leaves out a latent range, or holds one twice, is refused in one line."""
    parts = {}
    for shard in ("0/2", "1/2"):
        for latents in ("0/2", "1/2"):
            parts[shard, latents] = tmp_path / f"w{shard[0]}-l{latents[0]}.duckdb"
            result = cli_in_process(
                capsys, *precompute_args(parts[shard, latents], "--shard", shard, "--latent-shard", latents)
            )
            assert result.returncode == 0, result.stderr
            memory = "worker memory ≈ 12.3 MiB: 39,936 B per latent × 256 latents + 5,128 B per batch token × 512"
            assert f"{memory} + 4 B per shard token × 1,024 (per-token L0)" in result.stderr
            assert "8 windows" not in result.stdout and "256 features" in result.stdout
    merged = tmp_path / "merged.duckdb"
    result = cli_in_process(capsys, "merge", *map(str, reversed(parts.values())), "--out", str(merged))
    assert result.returncode == 0, result.stderr
    for sql in (
        "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY latent",
        "SELECT * FROM examples ORDER BY latent, kind, interval_index, rank",
        "SELECT * FROM neighbours ORDER BY latent, scope, rank",
        "SELECT * FROM windows ORDER BY window_id",
        "SELECT * EXCLUDE (quality_sums, explained_variance, ce_loss_clean, ce_loss_with_sae, "
        "ce_loss_zero_ablation, ce_loss_recovered) FROM saes",
    ):
        assert table(merged, sql) == table(atlas, sql), sql
    assert table(merged, "SELECT count(*) FROM meta WHERE key = 'latent_shard'") == [(0,)]
    out = str(tmp_path / "m.duckdb")
    _refused(
        cli_in_process(capsys, "merge", str(parts["0/2", "0/2"]), str(parts["1/2", "0/2"]), "--out", out),
        "latent range 1/2 of every SAE in none of the files",
    )
    _refused(
        cli_in_process(capsys, "merge", *map(str, list(parts.values())[:3]), "--out", out),
        "windows 8-15 of latent range 1/2 of the run's 16 are in none of the files",
    )
    twin = shutil.copy(parts["0/2", "1/2"], tmp_path / "twin.duckdb")
    _refused(
        cli_in_process(capsys, "merge", *map(str, parts.values()), str(twin), "--out", out),
        "(windows 0-7 of latent range 1/2) and",
        "overlap in windows 0-7",
    )
    _refused(
        cli_in_process(capsys, "merge", str(parts["0/2", "0/2"]), str(atlas), "--out", out),
        "split the latents differently (latent range 0/1 and latent range 0/2)",
    )
    assert not Path(out).exists()


def _refused(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(fragment in result.stderr for fragment in fragments), result.stderr


def _edited_copy(source: Path, target: Path, sql: str) -> Path:
    shutil.copy(source, target)
    with duckdb.connect(str(target)) as connection:
        connection.execute(sql)
    return target


def test_merge_refuses_overlapping_incomplete_and_mixed_shards(tmp_path, capsys):
    """Shards 0/2, 1/2 and 0/4 of a 16-window run: windows 0-7, 8-15 and 0-3, as each partial records
    (in this process: each command in a fresh interpreter would import torch again)."""

    def analysis(*args: str) -> subprocess.CompletedProcess:
        return cli_in_process(capsys, *args)

    parts = {}
    for shard in ("0/2", "1/2", "0/4"):
        parts[shard] = tmp_path / f"p{shard.replace('/', 'of')}.duckdb"
        result = analysis(*precompute_args(parts[shard], "--shard", shard))
        assert result.returncode == 0, result.stderr
    assert table(parts["0/4"], "SELECT value FROM meta WHERE key = 'window_ranges'") == [("[[0, 4]]",)]
    out = str(tmp_path / "m.duckdb")
    _refused(
        analysis("merge", str(parts["0/2"]), str(parts["0/4"]), "--out", out),
        f"{parts['0/4']} (windows 0-3) and {parts['0/2']} (windows 0-7) overlap in windows 0-3",
    )
    _refused(
        analysis("merge", str(parts["0/2"]), "--out", out),
        "windows 8-15 of the run's 16 are in none of the files",
        str(parts["0/2"]),
        "--allow-partial",
    )
    _refused(analysis("merge", str(parts["0/4"]), str(parts["1/2"]), "--out", out), "windows 4-7 of the run's 16")
    mixed = {
        "model": "UPDATE meta SET value = json_object('spec', 'other', 'architecture', 'x', 'content_hash', 'y') "
        "WHERE key = 'model'",
        "corpus": "UPDATE meta SET value = '{\"spec\": \"x.jsonl\"}' WHERE key = 'corpus'",
        "saes": "UPDATE meta SET value = '[]' WHERE key = 'saes'",
        "context": "UPDATE meta SET value = '64' WHERE key = 'context'",
    }
    for key, sql in mixed.items():
        other = _edited_copy(parts["1/2"], tmp_path / f"other-{key}.duckdb", sql)
        _refused(
            analysis("merge", str(parts["0/2"]), str(other), "--out", out),
            f"{other} and {parts['0/2']} come from different runs: they differ in {key}",
        )
    other = _edited_copy(
        parts["1/2"], tmp_path / "old.duckdb", "UPDATE meta SET value = '2' WHERE key = 'schema_version'"
    )
    _refused(analysis("merge", str(parts["0/2"]), str(other), "--out", out), "old.duckdb has atlas schema version 2")
    assert not Path(out).exists()
    allowed = analysis("merge", str(parts["0/2"]), "--out", out, "--allow-partial")
    assert allowed.returncode == 0, allowed.stderr
    assert "windows missing (--allow-partial): windows 8-15" in allowed.stdout
    coverage = json.loads(table(Path(out), "SELECT value FROM meta WHERE key = 'coverage'")[0][0])
    assert coverage == {"windows": 8, "total_windows": 16, "missing": [[8, 16]]}


def test_resume_never_replaces_a_complete_atlas(atlas):
    before = atlas.read_bytes()
    _refused(precompute(atlas, "--resume"), "exists (a complete atlas; --resume only continues an unfinished run)")
    assert atlas.read_bytes() == before


def test_verify_confirms_the_atlas_and_names_a_hand_edit(atlas, tmp_path, capsys):
    """The first verify runs as a user runs it (a subprocess), the two on edited copies in this process."""
    result = analysis("verify", str(atlas), "--sample", "64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok 64 sampled latents recomputed over 16 windows" in result.stdout
    firing = table(atlas, "SELECT min(latent) FROM features WHERE fire_count > 1")[0][0]
    edited = _edited_copy(
        atlas, tmp_path / "count.duckdb", f"UPDATE features SET fire_count = fire_count + 1 WHERE latent = {firing}"
    )
    result = cli_in_process(capsys, "verify", str(edited), "--sample", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"DIFFERS hist sums to fire_count: transcoder-L0:{firing}" in result.stdout
    # an edit the file's own sums cannot see: recomputation finds it (every latent sampled)
    edited = _edited_copy(
        atlas, tmp_path / "sum.duckdb", f"UPDATE features SET act_sum = act_sum * 1.5 WHERE latent = {firing}"
    )
    result = cli_in_process(capsys, "verify", str(edited), "--sample", "512")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ok consistency of all 512 latents" in result.stdout
    assert f"DIFFERS 512 sampled latents recomputed over 16 windows: transcoder-L0:{firing} act_sum" in result.stdout


def test_bad_input_gets_one_clear_line(atlas, tmp_path, capsys):
    """The first case as a user meets it (a subprocess), the others in this process."""
    cases = [
        (("--tokens", "0"), "argument --tokens: must be a whole number at least 1"),
        (("--out", str(atlas)), "exists; pass --overwrite"),
        (("--sae", str(tmp_path / "nowhere")), "nowhere"),
        (("--corpus", str(tmp_path)), "holds no documents"),
        (("--shard", "2/2"), "--shard must be i/n"),
    ]
    for number, (args, message) in enumerate(cases):
        base = ["precompute", "--sae", SAE, "--tokens", "256", "--out", str(tmp_path / "x.duckdb")]
        result = analysis(*base, *args) if number == 0 else cli_in_process(capsys, *base, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_full_disk_loses_nothing_and_the_rerun_completes(atlas, tmp_path, capsys):
    """The full disk is a subprocess's file-size limit; the rerun runs in this process."""
    out = tmp_path / "full.duckdb"
    result = precompute(out, "--checkpoint-minutes", "0", file_limit=2**20)
    assert result.returncode == 2 and "could not write the checkpoint" in result.stderr, result.stderr
    assert "rerun with --resume" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no half-written checkpoint or atlas
    result = cli_in_process(capsys, *precompute_args(out, "--checkpoint-minutes", "0", "--resume"))
    assert result.returncode == 0, result.stderr
    sql = "SELECT * FROM examples ORDER BY latent, kind, interval_index, rank"
    assert table(out, sql) == table(atlas, sql)


def test_readers_refuse_corrupt_foreign_and_other_version_files(atlas, tmp_path):
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(atlas.read_bytes()[:4096])
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).execute("CREATE TABLE t (x INT)").close()
    old = tmp_path / "old.duckdb"
    old.write_bytes(atlas.read_bytes())
    with duckdb.connect(str(old)) as connection:
        connection.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    for path, message in (
        (corrupt, "not a readable DuckDB file"),
        (foreign, "not a SAEscope atlas"),
        (old, "schema version 0"),
        (tmp_path / "missing.duckdb", "no atlas at"),
    ):
        with pytest.raises(AtlasError, match=message):
            open_atlas(path)


def test_folder_and_jsonl_corpora(tmp_path, capsys):
    """In this process: the corpus readers are what is tested here, not the command line."""
    folder = tmp_path / "texts" / "poems"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("In the beginning was the word. " * 40)
    (folder / "b.txt").write_bytes("caf\u00e9 au lait. ".encode("latin-1") * 3)  # three undecodable bytes
    jsonl = tmp_path / "docs.jsonl"
    lines = [json.dumps({"text": "The LORD spake unto Moses. " * 30, "domain": "d"}) for _ in range(3)]
    jsonl.write_text("\n".join(lines[:1] + ['{"text": ""}'] + lines[1:]))
    notices = {
        "texts": f"3 undecodable bytes in 1 file replaced by U+FFFD (first at {folder / 'b.txt'})",
        "docs": f"1 empty document skipped (first at {jsonl}:2)",
    }
    for corpus, domain in ((tmp_path / "texts", "poems"), (jsonl, "d")):
        out = tmp_path / f"{Path(corpus).stem}.duckdb"
        result = cli_in_process(
            capsys, "precompute", "--sae", SAE, "--corpus", str(corpus), "--tokens", "1e12", "--out", str(out)
        )
        assert result.returncode == 0, result.stderr
        assert notices[Path(corpus).stem] in result.stderr
        assert "fewer than --tokens 1,000,000,000,000: the atlas uses all of it" in result.stderr
        assert table(out, "SELECT DISTINCT domain FROM documents") == [(domain,)]
        windows = json.loads(table(out, "SELECT value FROM meta WHERE key = 'windows'")[0][0])
        assert 1 <= windows < 20


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_atlas(atlas, tmp_path, capsys):
    """The killed run is a real process; the resumed one runs in this process."""
    out = tmp_path / "resumed.duckdb"
    checkpoint = tmp_path / "resumed.duckdb.checkpoint"
    command = [
        sys.executable,
        "-m",
        "analysis",
        "precompute",
        "--sae",
        SAE,
        "--tokens",
        str(TOKENS),
        "--batch",
        "4",
        "--checkpoint-minutes",
        "0",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert checkpoint.exists() and not out.exists()
    result = cli_in_process(capsys, *command[3:], "--resume")
    assert result.returncode == 0, result.stderr
    assert not checkpoint.exists()
    for sql in (
        "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY latent",
        "SELECT * FROM examples ORDER BY latent, kind, interval_index, rank",
    ):
        assert table(out, sql) == table(atlas, sql), sql
