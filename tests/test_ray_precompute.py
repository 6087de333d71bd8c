"""`precompute --ray` on a local Ray of 2 workers: the single-pass atlas from window shards cut into
latent ranges, even when a worker is killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.cli import main
from analysis.paths import DEMO_DIR, REPO_ROOT
from tests.cli_run import cli_in_process
from tests.test_precompute import SAE, table

pytest.importorskip("ray", reason="Ray is not installed (pip install 'saescope[scale]')")

TOKENS = 16 * 1024
# a residual-stream SAE beside a transcoder: the merge must carry the one's missing output hook
SAES = ("--sae", str(DEMO_DIR / "saes" / "resid-L2"), "--sae", SAE)
COMPARED = (
    "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY sae, latent",
    "SELECT * FROM examples ORDER BY sae, latent, kind, interval_index, rank",
    "SELECT * FROM tokens ORDER BY token",
    "SELECT * FROM windows ORDER BY window_id",
    "SELECT * EXCLUDE (quality_sums, explained_variance, ce_loss_clean, ce_loss_with_sae, ce_loss_zero_ablation, "
    "ce_loss_recovered) FROM saes ORDER BY sae",
)


def command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "analysis",
        "precompute",
        *SAES,
        "--tokens",
        str(TOKENS),
        "--batch",
        "16",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def single_pass(tmp_path_factory) -> Path:
    """The plain run, through the CLI's entry point in this process (the Ray run below is a real subprocess)."""
    out = tmp_path_factory.mktemp("single") / "atlas.duckdb"
    assert main(command(out)[3:]) == 0
    return out


def assert_same_atlas(atlas: Path, reference: Path) -> None:
    for sql in COMPARED:
        assert table(atlas, sql) == table(reference, sql), sql


def _children(pid: int) -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry.name))
    return tree


def shard_workers(pid: int) -> list[int]:
    """Processes under ``pid`` that are running a shard (Ray titles a busy worker ``ray::run_shard``)."""
    tree, found, stack = _children(pid), [], [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            stack.append(child)
            try:
                if (Path("/proc") / str(child) / "cmdline").read_bytes().startswith(b"ray::run_shard"):
                    found.append(child)
            except OSError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc (Linux)")
def test_two_workers_give_the_single_pass_atlas_from_latent_ranges_though_one_is_killed(single_pass, tmp_path):
    """2 window shards × 2 latent ranges: 4 tasks on 2 workers; the worker of a shard part-way
    through (its checkpoint on disk) is killed, and Ray reruns that shard from its checkpoint."""
    out = tmp_path / "killed.duckdb"
    parts = tmp_path / "killed.duckdb.parts"
    process = subprocess.Popen(
        command(out, "--ray", "--ray-workers", "2", "--latent-shards", "2", "--checkpoint-minutes", "0"),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    victims: list[int] = []
    while not victims and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if parts.is_dir() and any(parts.glob("*.checkpoint")):  # a shard is part-way: kill its worker
            victims = shard_workers(process.pid)
    assert victims, "no shard worker was seen running with a checkpoint on disk"
    os.kill(victims[0], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr
    assert not Path(f"/proc/{victims[0]}").exists()
    assert "in 2 shards × 2 latent ranges on 2 CPU workers" in stdout, stdout
    assert "(worker memory ≈ " in stdout and "39,936 B per latent × 768 latents" in stderr
    assert "precompute on Ray (2 CPU workers, 2 shards × 2 latent ranges)" in stderr
    assert "tok/s" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killed.duckdb"]  # the partials are gone once merged
    assert_same_atlas(out, single_pass)


def test_ray_arguments_are_checked_before_a_cluster_starts(tmp_path, capsys):
    """Through the CLI's entry point in this process: nothing here may start a cluster."""
    out = tmp_path / "x.duckdb"
    (tmp_path / "x.duckdb.parts").mkdir()
    for args, message in (
        (("--shard", "1/2", "--ray"), "--ray plans its own shards"),
        (("--ray", "--ray-workers", "0"), "must be at least 1"),
        (("--ray", "--latent-shards", "0"), "must be at least 1"),
        (("--ray", "--latent-shard", "1/2"), "--ray plans its own shards"),
        (("--latent-shards", "2"), "--latent-shards plans latent ranges for --ray"),
        (("--ray", "--overwrite", "--latent-shards", "600"), "--latent-shards 600: an SAE has only 512 latents"),
        (("--ray", "--overwrite", "--max-worker-memory", "1MiB"), "is over --max-worker-memory 1.0 MiB"),
        (("--ray", "auto", "--ray-workers", "2"), "--ray-workers sizes a local Ray"),
        (("--ray",), "holds an unfinished --ray run; pass --resume"),
    ):
        result = cli_in_process(capsys, "precompute", "--sae", SAE, "--tokens", "256", "--out", str(out), *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
