"""What steering costs on top of plain generation, and how soon the first tokens of a comparison appear.

In one process, per method: a plain and a steered completion of the same prompt, token count and
seed, stepped alternately (plain then steered on even steps, the other way round on odd ones) with
each step timed, so the drift of this shared machine hits both alike; per repeat the ratio of their
summed step times, and the median over repeats (goal, issue 5: at most 1.05). Then the first-token
latency of a comparison: from calling ``stream_comparison`` to its first state, both completions
one token in (goal: under 1 s on the CPU). On the CPU, and on CUDA when torch sees it.

    python bench/steering_overhead.py --tokens 32 --repeats 9 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from analysis.live_model import LiveModel, LiveSpecs, load_live  # noqa: E402
from analysis.sampling import Completion, GenerationSettings  # noqa: E402
from analysis.steering import stream_comparison  # noqa: E402
from analysis.steering_hooks import steering_hooks  # noqa: E402
from analysis.steering_methods import METHODS  # noqa: E402
from analysis.steering_target import SteeringTarget  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
PROMPT = "And the king said unto his servants, Go ye and"
TARGETS = [SteeringTarget("transcoder-L2", 204, 9.0), SteeringTarget("resid-L2", 466, 8.0)]


def steered_over_plain(live: LiveModel, settings: GenerationSettings, method: str) -> float:
    """One plain and one steered completion stepped alternately: steered seconds / plain seconds."""
    prompt_ids, _ = live.tokenize(PROMPT)
    rows = [
        Completion(live.model, prompt_ids, settings),
        Completion(live.model, prompt_ids, settings, steering_hooks(live, TARGETS, method)),
    ]
    seconds = [0.0, 0.0]
    step = 0
    while not any(row.done for row in rows):  # compare the steps both ran (one may stop at EOS)
        for index in (0, 1) if step % 2 == 0 else (1, 0):
            started = time.perf_counter()
            rows[index].step()
            seconds[index] += time.perf_counter() - started
        step += 1
    return seconds[1] / seconds[0]


def first_state_seconds(live: LiveModel, settings: GenerationSettings) -> float:
    started = time.perf_counter()
    states = stream_comparison(live, PROMPT, TARGETS, "additive", settings)
    next(states)
    seconds = time.perf_counter() - started
    states.close()
    return seconds


def bench(device: str, settings: GenerationSettings, repeats: int) -> None:
    live = load_live(LiveSpecs(model=str(DEMO / "model"), saes=(str(DEMO / "saes"),)), device=device)
    with live.exclusive():
        steered_over_plain(live, settings, "additive")  # warm-up
        for method in METHODS:
            ratios = [steered_over_plain(live, settings, method) for _ in range(repeats)]
            print(
                f"{device:<5} {method:<9} steered/plain {statistics.median(ratios):.3f}  (goal <= 1.05; "
                f"repeats {min(ratios):.3f}..{max(ratios):.3f})",
                flush=True,
            )
    first = statistics.median(first_state_seconds(live, settings) for _ in range(repeats))
    print(f"{device:<5} first token of a comparison (both completions): {first * 1e3:.0f} ms  (goal < 1 s on the CPU)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per completion")
    parser.add_argument("--repeats", type=int, default=9, help="plain/steered pairs per method (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = GenerationSettings(max_new_tokens=args.tokens)
    print(
        f"prompt {PROMPT!r}, {args.tokens} new tokens, seed {settings.seed}, targets "
        f"{', '.join(f'{t.sae}:{t.latent}:{t.coefficient:g}' for t in TARGETS)}, torch threads {torch.get_num_threads()}"
    )
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        bench(device, settings, args.repeats)


if __name__ == "__main__":
    main()
