"""Nearest-neighbour search by decoder cosine at scale, on synthetic unit directions: the exact
blocked scan (analysis/atlas/weight_stats.nearest_latents: seconds, peak RSS, and its O(N^2 d)
extrapolation from the largest N measured) and the approximate IVF index (analysis/atlas/ann.py:
seconds and recall@10 against the exact answer on a sample of 500 latents).

Recall is measured on two kinds of directions: independent Gaussian ones (no structure at all, the
worst case for any index: every neighbour is about as far as any other) and "families", each
latent a shared anchor (one per 16 latents, so the exact top 10 are siblings) plus noise of the same norm, as features split from a
common direction do in real SAEs; real decoders sit between the two.

    .venv/bin/python -m bench.neighbours_scale --exact 4096,8192,16384 --approximate 131072 [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from analysis.atlas.ann import approximate_nearest, exact_nearest, recall_at_k
from analysis.atlas.weight_stats import nearest_latents


def directions(n: int, width: int, kind: str, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    noise = torch.randn(n, width, generator=generator)
    if kind == "families":
        anchors = torch.randn(max(1, n // 16), width, generator=generator)
        noise += anchors[torch.randint(0, len(anchors), (n,), generator=generator)]
    return noise.to(device)


def timed(device: str, function, *args, **kwargs):
    """``function(*args, **kwargs)`` and the seconds it took."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--exact", default="4096,8192,16384", help="latent counts for the exact scan ('' for none)")
    parser.add_argument("--approximate", default="131072", help="latent counts for the IVF index ('' for none)")
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--kinds", default="random,families", help="directions to measure the index on")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"width {args.width}, {args.device}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    sizes = [int(n) for n in args.exact.split(",") if n]
    seconds = 0.0
    for n in sizes:
        _, seconds = timed(args.device, nearest_latents, [directions(n, args.width, "random", args.device)])
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"exact {n:>9,} latents: {seconds:8.1f} s, peak RSS {peak_mb:,.0f} MB")
    for target in (131_072, 1_048_576) if sizes else ():
        print(
            f"exact {target:>9,} latents: ~{seconds * (target / sizes[-1]) ** 2:,.0f} s (quadratic from {sizes[-1]:,})"
        )
    for n in [int(n) for n in args.approximate.split(",") if n]:
        for kind in args.kinds.split(","):
            x = directions(n, args.width, kind, args.device)
            (_, found), seconds = timed(args.device, approximate_nearest, x, probes=args.probes)
            rows = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:500].to(x.device)
            recall = recall_at_k(found[rows], exact_nearest(x, rows))
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"IVF {n:>9,} latents ({kind}, {args.probes} probes): {seconds:8.1f} s, recall@10 {recall:.3f}, "
                f"peak RSS {peak_mb:,.0f} MB"
            )
            del x


if __name__ == "__main__":
    main()
