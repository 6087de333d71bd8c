"""Nearest neighbours by decoder cosine at scale: faiss's IVF-Flat index (what ``precompute`` uses
above ``--exact-neighbours-up-to`` latents) against the exact blocked scan, on structured synthetic
decoders (tests/decoder_families.py: 4,096 parent directions, children, latents; seeded).

Per run: the index's build and all-latents search seconds, recall@10 against the exact top 10 of a
seeded sample of ``--sample`` latents (computed here by a blocked matmul of the sample against all
rows), peak RSS; the exact scan (``weight_stats.nearest_latents``, the same blocks) timed on
``--exact-rows`` latents against all N and extrapolated linearly to all N rows (each row costs the
same N x d); optionally HNSW (``--hnsw``) for the choice of index. Ratios are against the exact scan
measured in the same invocation; the load average is printed with every stage (2 shared cores here).

    .venv/bin/python -u -m bench.neighbours_scale --latents 131072 --probes 8,16 --hnsw
    .venv/bin/python -u -m bench.neighbours_scale --latents 1048576 --probes 16 --exact-rows 16384
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import faiss
import numpy as np
import torch

from analysis.atlas.faiss_neighbours import build_index, lists_for, same_sae_neighbours
from analysis.atlas.weight_stats import EXACT_BUDGET, _blocked_top  # the exact scan's own inner loop
from tests.decoder_families import decoder_families


def note(what: str) -> None:
    """``what`` with the process's CPU seconds so far (all threads: the honest measure on a shared
    machine, where wall time waits for other jobs), peak RSS and the load average."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"{what} | CPU {time.process_time():,.0f} s, peak RSS {rss:.2f} GB, load {os.getloadavg()[0]:.1f}", flush=True
    )


def timer() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> str:
    return f"{time.perf_counter() - start[0]:,.1f} s ({time.process_time() - start[1]:,.1f} CPU-s)"


def exact_sample(units: torch.Tensor, rows: torch.Tensor, block: int = 65_536) -> torch.Tensor:
    """The exact top-10 indices (not itself) of ``rows``, by a blocked matmul against all rows."""
    best_values = torch.full((len(rows), 10), -torch.inf)
    best_ids = torch.zeros((len(rows), 10), dtype=torch.long)
    queries = units[rows]
    for start in range(0, len(units), block):
        similarity = queries @ units[start : start + block].T
        mine = (rows >= start) & (rows < start + block)
        similarity[mine.nonzero()[:, 0], rows[mine] - start] = -torch.inf
        top = similarity.topk(10, dim=1)
        values = torch.cat([best_values, top.values], dim=1)
        ids = torch.cat([best_ids, top.indices + start], dim=1)
        merged = values.topk(10, dim=1)
        best_values, best_ids = merged.values, ids.gather(1, merged.indices)
    return best_ids


def recall(found: np.ndarray, exact: torch.Tensor) -> float:
    found_t = torch.from_numpy(found)
    return float((found_t[:, :, None] == exact[:, None, :]).any(dim=1).sum()) / exact.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--latents", type=int, default=131_072)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--lists", type=int, default=0, help="IVF lists (0: the library's choice for N)")
    parser.add_argument("--probes", default="16", help="IVF probes to measure, comma-separated")
    parser.add_argument("--sample", type=int, default=1_000, help="latents recall is measured on")
    parser.add_argument("--exact-rows", type=int, default=0, help="latents the exact scan is timed on (0: all)")
    parser.add_argument(
        "--search-rows", type=int, default=0, help="latents the index search is timed on, extrapolated (0: all)"
    )
    parser.add_argument("--hnsw", action="store_true", help="also measure faiss's HNSW (M 16, ef 32 and 64)")
    args = parser.parse_args()
    n = args.latents
    print(f"{n:,} latents x {args.width}, faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    note("start")
    started = timer()
    units = decoder_families(n, args.width)
    note(f"generated in {since(started)}")
    rows = torch.from_numpy(np.sort(np.random.default_rng(1).choice(n, min(args.sample, n), replace=False)))
    started = timer()
    exact = exact_sample(units, rows)
    note(f"exact top 10 of {len(rows):,} sampled latents: {since(started)}")

    results: list[tuple[str, float, float]] = []  # (index, wall s, CPU s)
    for probes in [int(p) for p in args.probes.split(",")]:
        started = timer()
        index = build_index(units, probes, lists=args.lists)
        built = since(started)
        searching = timer()
        searched = args.search_rows or n
        same_sae_neighbours(index, units[:searched])
        scale = n / searched  # every query costs the same in expectation: the coarse step and `probes` lists
        wall = (time.perf_counter() - searching[0]) * scale + (searching[0] - started[0])
        cpu = (time.process_time() - searching[1]) * scale + (searching[1] - started[1])
        how = f"search {since(searching)}" + ("" if searched == n else f" for {searched:,} latents, x {scale:.0f}")
        found = np.concatenate([same_sae_neighbours(index, units[i : i + 1], i)[1] for i in rows.tolist()])
        name = f"IVF-Flat {args.lists or lists_for(n)} lists, {probes} probes"
        results.append((name, wall, cpu))
        note(
            f"{name}: build {built}, {how}; total {wall:,.0f} s ({cpu:,.0f} CPU-s), "
            f"recall@10 {recall(found, exact):.3f}"
        )
        del index
    if args.hnsw:
        started = timer()
        index = faiss.IndexHNSWFlat(args.width, 16, faiss.METRIC_INNER_PRODUCT)
        for start in range(0, n, 65_536):
            index.add(units[start : start + 65_536].numpy())
        built, build_wall, build_cpu = (
            since(started),
            time.perf_counter() - started[0],
            time.process_time() - started[1],
        )
        for ef in (32, 64):
            index.hnsw.efSearch = ef
            searching = timer()
            found = np.concatenate([index.search(units[s : s + 65_536].numpy(), 11)[1] for s in range(0, n, 65_536)])
            sample = found[rows.numpy()]
            without_self = np.array([[j for j in r if j != i][:10] for i, r in zip(rows.tolist(), sample)])
            name = f"HNSW M 16, ef {ef}"
            wall, cpu = time.perf_counter() - searching[0], time.process_time() - searching[1]
            results.append((name, build_wall + wall, build_cpu + cpu))
            note(f"{name}: build {built}, search {since(searching)}, recall@10 {recall(without_self, exact):.3f}")
        del index

    timed = args.exact_rows or n
    owner = torch.zeros(n, dtype=torch.long)
    columns = EXACT_BUDGET // (4 * 1024)
    started = timer()
    for start in range(0, timed, 1024):
        _blocked_top(units, torch.arange(start, min(start + 1024, timed)), owner, 0, True, columns)
    wall, cpu = ((time.perf_counter() - started[0]) * n / timed, (time.process_time() - started[1]) * n / timed)
    how = "measured" if timed == n else f"{timed:,} rows measured in {since(started)}, x {n / timed:.0f}"
    note(f"exact blocked scan: {wall:,.0f} s ({cpu:,.0f} CPU-s) for all {n:,} ({how})")
    for name, index_wall, index_cpu in results:
        print(
            f"{name}: {wall / index_wall:.1f}x faster than the exact scan in wall time, {cpu / index_cpu:.1f}x in CPU time"
        )


if __name__ == "__main__":
    main()
