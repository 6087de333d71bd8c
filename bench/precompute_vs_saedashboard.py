"""Our precompute against SAEDashboard on the same model, SAE and tokens: agreement and throughput.

Both tools see the same windows (cut by our corpus code and handed to SAEDashboard as a .npy) and
the same number of CPU threads. SAEDashboard runs in its own venv (it pins older libraries; see
``bench/requirements-saedashboard.txt``) through ``bench/saedashboard_runner.py``, on a sample of
latents; ours runs the whole atlas pass over every latent and writes a real atlas file.

Agreement, per sampled latent:
* max activation within 1e-4;
* density (firing non-special tokens / non-special tokens) equal;
* top examples: SAEDashboard's top 20 are single tokens, ours are whole windows (ranked by their
  max) with every token's activation stored. The top 20 tokens always lie in the top 20 windows,
  so we rebuild the top 20 tokens from our stored windows and compare them with SAEDashboard's
  (window, position, value within 1e-4). Where values tie at the cut-off SAEDashboard's choice is
  arbitrary (torch.topk), so only tokens strictly above the 20th value must match one for one.

Throughput: tokens x latents / seconds, each tool's seconds excluding imports and model loading.

    python bench/precompute_vs_saedashboard.py --windows 256 --latents 64
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
from analysis.atlas.precompute import Precompute, PrecomputeConfig  # noqa: E402
from analysis.atlas.reader import open_atlas  # noqa: E402
from analysis.atlas.store import write_atlas  # noqa: E402

DEMO = ROOT / "data" / "demo"
TOLERANCE = 1e-4


def run_ours(sae: Path, n_windows: int, out: Path) -> tuple[Precompute, float]:
    """The full atlas pass (stream, weight statistics, write) over every latent; seconds after loading."""
    config = PrecomputeConfig(
        model=str(DEMO / "model"), saes=(str(sae),), corpus="demo", tokens=n_windows * 128, out=out, overwrite=True
    )
    job = Precompute(config)
    started = time.perf_counter()
    write_atlas(out, job.finish(job.stream()))
    return job, time.perf_counter() - started


def run_saedashboard(python: str, sae: Path, windows: Path, latents: list[int], threads: int, out: Path) -> dict:
    command = [
        python,
        str(ROOT / "bench" / "saedashboard_runner.py"),
        "--model",
        str(DEMO / "model"),
        "--sae",
        str(sae),
        "--windows",
        str(windows),
        "--latents",
        ",".join(map(str, latents)),
        "--threads",
        str(threads),
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(out.read_text())


def our_latent(atlas, latent: int, top_k: int) -> dict:
    """One latent's max, density and top ``top_k`` tokens, read back from the atlas file."""
    max_act, density = atlas.execute(
        "SELECT max_act, density FROM features WHERE sae = 0 AND latent = ?", [latent]
    ).fetchone()
    rows = atlas.execute(
        "SELECT window_id, act_positions, act_values FROM examples WHERE sae = 0 AND latent = ? AND kind = 'top'",
        [latent],
    ).fetchall()
    tokens = [
        (value, window, position) for window, positions, values in rows for position, value in zip(positions, values)
    ]
    tokens.sort(key=lambda t: (-t[0], t[1], t[2]))
    return {"max": max_act, "density": density, "top": tokens[:top_k]}


def compare(ours: dict, theirs: dict) -> dict:
    """How one latent's numbers agree (see the module docstring)."""
    their_top = [(e["value"], e["window_index"], e["position"]) for e in theirs["top_examples"] if e["value"] > 0]
    cutoff = their_top[-1][0] if len(their_top) == len(theirs["top_examples"]) else 0.0
    strict_theirs = [t for t in their_top if t[0] > cutoff + TOLERANCE]
    strict_ours = [t for t in ours["top"] if t[0] > cutoff + TOLERANCE]
    same_tokens = sorted(t[1:] for t in strict_theirs) == sorted(t[1:] for t in strict_ours)
    values_ours, values_theirs = sorted(t[0] for t in ours["top"]), sorted(t[0] for t in their_top)
    same_values = len(values_ours) == len(values_theirs) and bool(
        np.allclose(values_ours, values_theirs, atol=TOLERANCE, rtol=0)
    )
    return {
        "max_diff": abs(ours["max"] - theirs["max_activation"]),
        "density_equal": abs(ours["density"] - theirs["density"]) < 1e-12,
        "top_equal": same_tokens and same_values,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sae", type=Path, default=DEMO / "saes" / "resid-L2")
    parser.add_argument("--windows", type=int, default=256, help="windows of 128 tokens from the demo held-out stream")
    parser.add_argument("--latents", type=int, default=64, help="latents SAEDashboard computes (evenly spaced)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--saedashboard-python", default="/work/sdb-venv/bin/python")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        job, our_seconds = run_ours(args.sae, args.windows, folder / "atlas.duckdb")
        windows_file = folder / "windows.npy"
        np.save(windows_file, job.corpus.windows(job.window_ids, 128, job.bos_id).numpy())
        d_sae = job.saes[0].d_sae
        latents = np.linspace(0, d_sae - 1, args.latents).round().astype(int).tolist()
        theirs = run_saedashboard(
            args.saedashboard_python, args.sae, windows_file, latents, args.threads, folder / "saedashboard.json"
        )
        atlas = open_atlas(folder / "atlas.duckdb")
        results = [compare(our_latent(atlas, latent, 20), their) for latent, their in zip(latents, theirs["latents"])]

    tokens = args.windows * 128
    our_rate, their_rate = tokens * d_sae / our_seconds, theirs["throughput_token_latents_per_s"]
    disagreeing = [latent for latent, result in zip(latents, results) if not result["top_equal"]]
    print(f"{args.sae.name}: {tokens:,} tokens, {len(latents)} sampled latents of {d_sae}, {args.threads} thread(s)")
    print(f"max activation: largest difference {max(r['max_diff'] for r in results):.2e} (tolerance {TOLERANCE})")
    print(f"density equal: {sum(r['density_equal'] for r in results)}/{len(results)}")
    print(
        f"top examples equal: {len(results) - len(disagreeing)}/{len(results)}"
        + (f"  (differ: {disagreeing})" if disagreeing else "")
    )
    print(
        f"throughput: ours {our_rate:.3g} token-latents/s ({our_seconds:.1f} s, all {d_sae} latents), "
        f"SAEDashboard {their_rate:.3g} ({theirs['seconds']:.1f} s, {len(latents)} latents); "
        f"ratio {our_rate / their_rate:.1f}x (goal >= 10)"
    )


if __name__ == "__main__":
    main()
