"""Nearest-neighbour search by decoder cosine (analysis/atlas/weight_stats.nearest_latents) on
random unit directions of width 768 (GPT-2 small's d_model): seconds and peak RSS for N latents,
and the O(N^2 d) extrapolation to 131,072 and 1,048,576 latents from the largest measured N.

    .venv/bin/python -m bench.neighbours_scale --latents 4096,8192,16384 [--device cuda]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from analysis.atlas.weight_stats import nearest_latents


def measure(n: int, width: int, device: str) -> float:
    directions = torch.randn(n, width, generator=torch.Generator().manual_seed(n)).to(device)
    started = time.perf_counter()
    nearest_latents([directions])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    assert __doc__ is not None, "the module docstring is the bench's description"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latents", default="4096,8192,16384")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sizes = [int(n) for n in args.latents.split(",")]
    seconds = 0.0
    for n in sizes:
        seconds = measure(n, args.width, args.device)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{n:>9,} latents: {seconds:8.2f} s, peak RSS {peak_mb:,.0f} MB ({args.device}, {torch.get_num_threads()} threads)"
        )
    for target in (131_072, 1_048_576):
        estimate = seconds * (target / sizes[-1]) ** 2
        print(f"{target:>9,} latents: ~{estimate:,.0f} s estimated (quadratic from {sizes[-1]:,})")


if __name__ == "__main__":
    main()
