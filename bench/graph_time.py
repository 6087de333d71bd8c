"""Seconds per attribution graph on the demo model and transcoders, for 8-, 16- and 32-token prompts,
under several circuit-tracer settings (batch size : max feature nodes). Goal (issue 6): a 32-token
graph in at most 10 s on this CPU.

Wall seconds on a shared machine drift with the other processes, so CPU seconds (this process,
all threads) and the load average are printed beside them. On an oversubscribed machine torch's
second thread mostly spins: ``--threads 1`` is then faster (see docs/GRAPHS.md).

    python bench/graph_time.py --settings 16:1024,16:512,128:512,16:all --repeats 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from analysis.graphs import GraphSettings, compute_graph, replacement_model, to_networkx  # noqa: E402
from analysis.live_model import LiveSpecs, load_live  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"


def parse_settings(text: str) -> list[GraphSettings]:
    """``64:512,128:all`` -> settings with those batch sizes and max feature nodes (all = every one)."""
    settings = []
    for item in text.split(","):
        batch, nodes = item.split(":")
        settings.append(GraphSettings(batch_size=int(batch), max_feature_nodes=None if nodes == "all" else int(nodes)))
    return settings


def demo_prompt(live, n_tokens: int) -> str:
    """The first ``n_tokens`` of the held-out demo stream as text that tokenizes back to that many."""
    stream = np.load(DEMO / "heldout_tokens.npy")
    special = set(live.tokenizer.all_special_ids)
    ids = [int(t) for t in stream[: 4 * n_tokens] if int(t) not in special]
    for end in range(n_tokens, len(ids)):
        text = live.tokenizer.decode(ids[:end])
        if len(live.tokenizer.encode(text, add_special_tokens=False)) == n_tokens:
            return text
    raise ValueError(f"no {n_tokens}-token prompt found at the start of the held-out stream")


def timed(live, prompt: str, settings: GraphSettings) -> tuple[float, float, int, int]:
    """Wall and CPU seconds of compute_graph plus pruning, and the graph's feature counts."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = compute_graph(live, prompt, settings=settings)
    network = to_networkx(result)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, len(result.graph.active_features), network.number_of_nodes()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--settings", default="16:1024,16:512,128:512,16:all", help="batch:max_feature_nodes, ...")
    parser.add_argument("--lengths", default="8,16,32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    live = load_live(LiveSpecs(model=str(DEMO / "model"), saes=(str(DEMO / "saes"),)), device="cpu")
    started = time.perf_counter()
    replacement_model(live)
    print(
        f"replacement model built in {time.perf_counter() - started:.2f} s; torch threads {torch.get_num_threads()}, "
        f"cores {os.cpu_count()}"
    )
    prompts = {n: demo_prompt(live, int(n)) for n in args.lengths.split(",")}
    compute_graph(live, prompts[min(prompts, key=int)])  # warm-up
    print("tokens  batch  max_nodes  active  kept  wall_s  cpu_s  load1")
    for settings in parse_settings(args.settings):
        for n, prompt in prompts.items():
            runs = [timed(live, prompt, settings) for _ in range(args.repeats)]
            wall = statistics.median(run[0] for run in runs)
            cpu = statistics.median(run[1] for run in runs)
            nodes = settings.max_feature_nodes or "all"
            print(
                f"{n:>6}  {settings.batch_size:>5}  {nodes:>9}  {runs[0][2]:>6}  {runs[0][3]:>4}  {wall:6.2f}  "
                f"{cpu:5.2f}  {os.getloadavg()[0]:5.2f}",
                flush=True,
            )
    defaults = GraphSettings()
    print(
        f"circuit-tracer settings besides those: max_n_logits={defaults.max_n_logits}, "
        f"desired_logit_prob={defaults.desired_logit_prob}, offload=None, update_interval=4 (its default); "
        "pruning node 0.8 / edge 0.98"
    )


if __name__ == "__main__":
    main()
