"""What a feature detector costs against a full forward of its model: milliseconds per 1,000 texts
for the detector (forward to the SAE's hook only, encode, pool, dot) and for the model's whole
forward, on the same texts with the same batching, in one process; their ratio, and the load average
(this machine is shared: the ratio is what carries, the milliseconds drift with the load).

The texts are the demo PII data (seeded), so the lengths are those the detector is meant for.

    python -m analysis detector demo-data --out /tmp/pii.jsonl --n 2000 --seed 0
    python -m analysis detector train --data /tmp/pii.jsonl --out /tmp/pii-detector
    python bench/detector_cost.py --detector /tmp/pii-detector --texts 1000 --threads 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from analysis.governance.detector_cli import load_for_detector  # noqa: E402
from analysis.governance.detector_cost import measure_cost  # noqa: E402
from analysis.governance.detector_files import read_detector  # noqa: E402
from analysis.governance.detector_run import matching_sae  # noqa: E402
from analysis.governance.pii_data import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="Feature detector vs full forward: ms per 1,000 texts")
    parser.add_argument("--detector", required=True, help="a folder written by `detector train`")
    parser.add_argument("--texts", type=int, default=1000, help="texts timed (default 1000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated texts (default 7)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when available)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    detector = read_detector(Path(args.detector))
    live = load_for_detector(detector, args.device)
    sae = matching_sae(live, detector)
    texts = [row["text"] for row in generate(args.texts, args.seed)]
    latents = np.array([f["latent"] for f in detector["features"]])
    weights = np.array([f["weight"] for f in detector["features"]])
    cost = measure_cost(live, sae, texts, detector["pool"], latents, weights)
    print(json.dumps(cost, indent=2))
    print(
        f"detector {cost['detector_ms_per_1000_texts']:,.0f} ms / 1,000 texts ({cost['blocks_run']} of "
        f"{cost['n_layers']} blocks + encode + dot), full forward {cost['full_forward_ms_per_1000_texts']:,.0f} ms: "
        f"{cost['full_over_detector']:.2f}x; {cost['device']}, {cost['torch_threads']} threads, "
        f"load average {cost['load_average_1min']} (1 min, at the end of the timing)"
    )


if __name__ == "__main__":
    main()
