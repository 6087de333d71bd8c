"""Atlas pass time divided by the time of the work it cannot avoid, measured in one process.

The bare work: the model forward to the last hooked layer and every SAE's encode, over the same
windows and batch size as the pass. The ratio is what the precompute adds on top (statistics,
top-K and samples, quality sampling). Goal (issue 3): at most 1.5.

    python bench/precompute_overhead.py --tokens 65536
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from analysis.atlas.precompute import Precompute, PrecomputeConfig  # noqa: E402
from analysis.hooked_forward import run_to_hooks  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


@torch.no_grad()
def bare_seconds(job: Precompute, batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(job.window_ids), batch):
        tokens = job.corpus.windows(job.window_ids[start : start + batch], job.config.context, job.bos_id)
        cache = run_to_hooks(job.model, tokens.to(job.loaded.device), job.hooks)
        for loaded in job.saes:
            loaded.sae.encode(cache[loaded.hook_name])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536)
    parser.add_argument("--sae", action="append", default=None)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quality-windows", type=int, default=64, help="windows measured for EV and CE")
    args = parser.parse_args()
    config = PrecomputeConfig(
        model=str(DEMO / "model"),
        saes=tuple(args.sae or [str(DEMO / "saes")]),
        corpus="demo",
        tokens=args.tokens,
        out=Path("/tmp/overhead.duckdb"),
        batch_windows=args.batch,
        quality_windows=args.quality_windows,
        overwrite=True,
    )
    job = Precompute(config)
    bare_seconds(job, args.batch)  # warm-up
    bare = bare_seconds(job, args.batch)
    started = time.perf_counter()
    job.stream()
    full = time.perf_counter() - started
    tokens = len(job.window_ids) * config.context
    latents = sum(s.d_sae for s in job.saes)
    print(
        f"tokens {tokens:,}  latents {latents:,}  bare {bare:.1f} s  atlas pass {full:.1f} s  "
        f"ratio {full / bare:.2f}  (goal <= 1.5)  pass throughput {tokens * latents / full:.3g} token-latents/s"
    )


if __name__ == "__main__":
    main()
