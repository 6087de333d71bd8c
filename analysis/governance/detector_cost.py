"""What a detector costs against a full forward of its model, measured in the same process on the
same texts with the same batching: milliseconds per 1,000 texts, and the ratio."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from analysis.governance.detector_encode import blocks_run, full_forward, pooled
from analysis.live_model import LiveModel

REPEATS = 3  # each timed this many times, alternating; the fastest counts (the least disturbed by other work)


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure_cost(
    live: LiveModel, sae_name: str, texts: Sequence[str], pool: str, latents: np.ndarray, weights: np.ndarray
) -> dict:
    """Detector (forward to the SAE's hook, encode, pool, dot) vs the model's full forward on ``texts``."""
    hook = live.sae(sae_name).hook_name

    def detector() -> np.ndarray:
        return pooled(live, sae_name, texts, pool, with_resid=False).latents[:, latents] @ weights

    def forward() -> None:
        full_forward(live, texts)

    detector()  # warm-up: first calls allocate
    forward()
    timings: dict[str, list[float]] = {"detector": [], "full": []}
    for _ in range(REPEATS):
        timings["detector"].append(_seconds(detector))
        timings["full"].append(_seconds(forward))
    per_1000 = {name: min(values) / len(texts) * 1000 * 1000 for name, values in timings.items()}
    return {
        "texts": len(texts),
        "detector_ms_per_1000_texts": round(per_1000["detector"], 2),
        "full_forward_ms_per_1000_texts": round(per_1000["full"], 2),
        "full_over_detector": round(per_1000["full"] / per_1000["detector"], 3),
        "blocks_run": blocks_run(hook),
        "n_layers": int(live.model.cfg.n_layers),
        "device": live.device,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "repeats": REPEATS,
    }
