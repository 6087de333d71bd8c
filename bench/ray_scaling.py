"""Precompute on a local Ray of 1 and 2 workers against the plain single process, in one invocation.

Every variant runs the same precompute (demo model, the given SAEs, the same tokens and batch),
one torch thread per worker, end to end as its caller meets it: plain is ``run_precompute`` in this
process (model load, pass, atlas write); Ray is ``run_on_ray`` from this process (local Ray start,
worker processes that import and load the model, the shards, the merge). ``hand2`` is the ceiling
without Ray: two plain one-thread processes started at once on the two halves of the windows, then
the same merge; what it gains over plain is what this machine gives a second process at all.
Variants alternate, round after round, so the machine's drifting load hits them alike; the load
average is printed with each run. Each atlas is checked equal to the plain one.

Besides the end-to-end times, the streaming pass alone: each atlas records its workers' pass
seconds (summed over its shards); with the shards running at once, the cluster's pass throughput
is workers × tokens / that sum. Goals (issue 19): Ray with 1 worker ≤ 1.1× the plain time; 2
workers ≥ 1.7× the throughput of 1.

    python bench/ray_scaling.py --tokens 65536 --rounds 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import torch

from analysis.atlas.merge import merge_atlases
from analysis.atlas.precompute import run_precompute
from analysis.atlas.ray_precompute import RaySettings, run_on_ray
from analysis.atlas.reader import open_atlas, read_meta
from analysis.atlas.run_config import PrecomputeConfig
from analysis.paths import DEMO_DIR

THREADS = 1  # torch threads per worker, and of the plain run
WORKERS = {"plain": 1, "ray1": 1, "ray2": 2, "hand2": 2}  # the variants, and the processes each runs at once
COMPARED = (
    "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY sae, latent",
    "SELECT * FROM examples ORDER BY sae, latent, kind, interval_index, rank",
)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _hand_shard(config: PrecomputeConfig) -> None:
    """One of hand2's processes: a plain one-thread precompute of its window shard."""
    torch.set_num_threads(THREADS)
    run_precompute(config)


def run_by_hand(config: PrecomputeConfig, processes: int) -> None:
    """``precompute --shard i/n`` in n processes at once, then ``merge``: sharding without Ray."""
    parts = [config.out.with_name(f"{config.out.stem}-part{i}.duckdb") for i in range(processes)]
    shards = [replace(config, shard=(i, processes), out=part) for i, part in enumerate(parts)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_hand_shard, shards)
    merge_atlases(parts, config.out, overwrite=True)
    for part in parts:
        part.unlink()


def run(variant: str, config: PrecomputeConfig) -> float:
    started = time.perf_counter()
    if variant == "plain":
        run_precompute(config)
    elif variant.startswith("hand"):
        run_by_hand(config, WORKERS[variant])
    else:
        run_on_ray(config, RaySettings(workers=WORKERS[variant], threads=THREADS))
    return time.perf_counter() - started


def pass_seconds(atlas: Path) -> float:
    """The workers' streaming-pass seconds as the atlas records them (summed over its shards)."""
    connection = open_atlas(atlas)
    try:
        return float(read_meta(connection)["pass_seconds"])
    finally:
        connection.close()


def same_atlas(a: Path, b: Path) -> bool:
    with duckdb.connect(str(a), read_only=True) as x, duckdb.connect(str(b), read_only=True) as y:
        return all(x.execute(sql).fetchall() == y.execute(sql).fetchall() for sql in COMPARED)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--sae", action="append", help="SAE specs (default: every demo SAE and transcoder)")
    parser.add_argument("--batch", type=int, default=32, help="windows per batch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    variants = list(WORKERS)
    times: dict[str, list[float]] = {v: [] for v in variants}
    pass_rates: dict[str, list[float]] = {v: [] for v in variants}  # the cluster's pass throughput, tokens/s
    folder = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    print(
        f"{args.tokens:,} tokens, batch {args.batch}, {THREADS} torch thread per worker, {os.cpu_count()} CPUs, no GPU"
    )
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            config = PrecomputeConfig(
                model=str(DEMO_DIR / "model"),
                saes=tuple(args.sae or [str(DEMO_DIR / "saes")]),
                corpus="demo",
                tokens=args.tokens,
                out=folder / f"{variant}.duckdb",
                batch_windows=args.batch,
                overwrite=True,
            )
            before = load()
            seconds = run(variant, config)
            times[variant].append(seconds)
            in_pass = pass_seconds(config.out)
            pass_rates[variant].append(WORKERS[variant] * args.tokens / in_pass)
            print(
                f"round {round_} {variant:<6} {seconds:7.1f} s  {args.tokens / seconds:7.0f} tok/s end to end; "
                f"pass {in_pass:6.1f} worker-s, {pass_rates[variant][-1]:6.0f} tok/s   ({before}; after: {load()})",
                flush=True,
            )
    equal = {v: same_atlas(folder / f"{v}.duckdb", folder / "plain.duckdb") for v in variants[1:]}
    best = {v: min(t) for v, t in times.items()}
    median = {v: statistics.median(t) for v, t in times.items()}
    rate = {v: max(r) for v, r in pass_rates.items()}
    print(f"best of {args.rounds}: " + ", ".join(f"{v} {s:.1f} s" for v, s in best.items()))
    print(
        f"Ray 1 worker / plain time: {best['ray1'] / best['plain']:.2f} "
        f"(median {median['ray1'] / median['plain']:.2f}; goal <= 1.1)"
    )
    print(
        f"Ray 2 / 1 worker throughput, end to end: {best['ray1'] / best['ray2']:.2f} "
        f"(median {median['ray1'] / median['ray2']:.2f}; goal >= 1.7); streaming pass: "
        f"{rate['ray2'] / rate['ray1']:.2f}"
    )
    print(
        f"without Ray, 2 plain processes / 1 (this machine's ceiling): end to end {best['plain'] / best['hand2']:.2f}, "
        f"streaming pass {rate['hand2'] / rate['plain']:.2f}"
    )
    print(f"atlases equal to plain: {equal}")


if __name__ == "__main__":
    main()
