"""Precompute on a local Ray of 1 and 2 workers against the plain single process, in one invocation.

Every variant runs the same precompute (demo model, the given SAEs, the same tokens and batch),
one torch thread per worker, end to end as its caller meets it: plain is ``run_precompute`` in this
process (model load, pass, atlas write); Ray is ``run_on_ray`` from this process (local Ray start,
worker processes that import and load the model, the shards, the merge). Variants alternate, round
after round, so the machine's drifting load hits them alike; the load average is printed with each
run. Each Ray atlas is checked equal to the plain one. Goals (issue 19): Ray with 1 worker ≤ 1.1×
the plain time; 2 workers ≥ 1.7× the throughput of 1.

    python bench/ray_scaling.py --tokens 65536 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import torch

from analysis.atlas.precompute import run_precompute
from analysis.atlas.ray_precompute import RaySettings, run_on_ray
from analysis.atlas.run_config import PrecomputeConfig
from analysis.paths import DEMO_DIR

THREADS = 1  # torch threads per worker, and of the plain run
COMPARED = (
    "SELECT * EXCLUDE (act_sum, mean_act) FROM features ORDER BY sae, latent",
    "SELECT * FROM examples ORDER BY sae, latent, kind, interval_index, rank",
)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(variant: str, config: PrecomputeConfig) -> float:
    started = time.perf_counter()
    if variant == "plain":
        run_precompute(config)
    else:
        run_on_ray(config, RaySettings(workers=int(variant.removeprefix("ray")), threads=THREADS))
    return time.perf_counter() - started


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
    variants = ["plain", "ray1", "ray2"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    folder = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    print(
        f"{args.tokens:,} tokens, batch {args.batch}, {THREADS} torch thread per worker, {os.cpu_count()} CPUs, no GPU"
    )
    for round_ in range(args.rounds):
        order = variants[round_ % 3 :] + variants[: round_ % 3]
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
            print(
                f"round {round_} {variant:<6} {seconds:7.1f} s  {args.tokens / seconds:7.0f} tok/s   ({before}; after: {load()})",
                flush=True,
            )
    equal = {v: same_atlas(folder / f"{v}.duckdb", folder / "plain.duckdb") for v in ("ray1", "ray2")}
    best = {v: min(t) for v, t in times.items()}
    median = {v: statistics.median(t) for v, t in times.items()}
    print(f"best of {args.rounds}: " + ", ".join(f"{v} {s:.1f} s" for v, s in best.items()))
    print(
        f"Ray 1 worker / plain time: {best['ray1'] / best['plain']:.2f} (median {median['ray1'] / median['plain']:.2f}; goal <= 1.1)"
    )
    print(
        f"Ray 2 / 1 worker throughput: {best['ray1'] / best['ray2']:.2f} (median {median['ray1'] / median['ray2']:.2f}; goal >= 1.7)"
    )
    print(f"atlases equal to plain: {equal}")


if __name__ == "__main__":
    main()
