"""The queries each dashboard page runs, timed on an atlas at the scale of a large SAE release.

Runs the pages' own functions (``dashboard/browse/feature_queries.py``) through the dashboard's
``Workspace`` (user-data file with the atlas attached read-only), with some features annotated
through the user store so the joins have work to do. Reports p50/p95 per page against the goals of
issue 4, and each p95 as a ratio to the same query on the demo atlas (7,680 latents) timed in the
same run, so the cost of scale is visible whatever the machine's load.

    python bench/synthetic_atlas.py --out /tmp/synthetic_1m.duckdb      # once, a few minutes
    python bench/dashboard_queries.py --atlas /tmp/synthetic_1m.duckdb
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from analysis.paths import DEMO_ATLAS
from dashboard.browse.feature_queries import SORTS, FeatureFilter, feature_table, feature_view, next_in_queue  # noqa: E402
from dashboard.shell.settings import Settings
from dashboard.shell.workspace import Atlas, Workspace  # noqa: E402
from dashboard.userdata import STATUSES  # noqa: E402

GOALS_MS = {"feature page": 50, "feature table": 150, "triage next": 50}
PAGE_SIZE = 50


def _annotate(workspace: Workspace, atlas: Atlas, count: int, rng: random.Random) -> None:
    """Label ``count`` random features through the store (as reviewers would)."""
    tags = workspace.store.tags()
    for _ in range(count):
        row = atlas.saes.iloc[rng.randrange(len(atlas.saes))]
        workspace.store.annotate(
            str(row["content_hash"]),
            str(row["name"]),
            rng.randrange(int(row["d_sae"])),
            rng.choice(["ann", "ben", "cat"]),
            status=rng.choice(STATUSES[1:]),
            label=rng.choice(["quotes", "code", "names", "numbers"]),
            tags=[rng.choice(tags)],
        )


def _random_filter(atlas: Atlas, rng: random.Random) -> FeatureFilter:
    saes = tuple(sorted(rng.sample(range(len(atlas.saes)), rng.randint(1, 2)))) if rng.random() < 0.7 else ()
    choice = rng.randrange(5)
    return FeatureFilter(
        saes=saes,
        min_density=10 ** rng.uniform(-6, -3) if choice in (0, 1) else None,
        max_density=10 ** rng.uniform(-2, 0) if choice == 1 else None,
        min_max_act=rng.uniform(0.5, 5) if choice == 2 else None,
        text=rng.choice(["the", "ing", "code"]) if choice == 3 else "",
        statuses=("unreviewed",) if choice == 4 else (),
    )


def _feature(atlas: Atlas, rng: random.Random) -> tuple[int, int]:
    row = atlas.saes.iloc[rng.randrange(len(atlas.saes))]
    return int(row["sae"]), rng.randrange(int(row["d_sae"]))


def _page_calls(workspace: Workspace, atlas: Atlas, rng: random.Random) -> dict[str, Callable[[], object]]:
    def table():
        flt = _random_filter(atlas, rng)
        return feature_table(workspace, atlas, flt, rng.choice(list(SORTS)), rng.randrange(5), PAGE_SIZE)

    def triage():
        return next_in_queue(workspace, atlas, _random_filter(atlas, rng), _feature(atlas, rng))

    return {
        "feature page": lambda: feature_view(workspace, atlas, *_feature(atlas, rng)),
        "feature table": table,
        "triage next": triage,
    }


def _percentiles(call: Callable[[], object], runs: int) -> tuple[float, float]:
    call()  # warm: first touch of the file's blocks
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--atlas", type=Path, default=Path("/tmp/synthetic_1m.duckdb"))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--annotations", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace(Settings(read_only=False, atlas_dir=None, user_db=Path(folder) / "userdata.duckdb"))
        large, demo = workspace.atlas(args.atlas), workspace.atlas(DEMO_ATLAS)
        rows = (
            workspace.cursor()
            .execute(
                f"SELECT (SELECT count(*) FROM {large.alias}.features), (SELECT count(*) FROM {large.alias}.examples)"
            )
            .fetchone()
        )
        assert rows is not None
        print(
            f"atlas {args.atlas}: {rows[0]:,} latents, {rows[1]:,} example rows; {args.runs} runs per query; "
            f"load average {_load()}"
        )
        rng = random.Random(args.seed)
        _annotate(workspace, large, args.annotations, rng)
        _annotate(workspace, demo, args.annotations // 10, rng)
        at_scale = {name: _percentiles(call, args.runs) for name, call in _page_calls(workspace, large, rng).items()}
        baseline = {name: _percentiles(call, args.runs) for name, call in _page_calls(workspace, demo, rng).items()}
    print(f"{'query':<14} {'p50 ms':>8} {'p95 ms':>8} {'goal p95':>9} {'met':>4} {'demo p95':>9} {'scale cost':>11}")
    for name, (p50, p95) in at_scale.items():
        demo_p95 = baseline[name][1]
        print(
            f"{name:<14} {p50:8.1f} {p95:8.1f} {GOALS_MS[name]:9d} {'yes' if p95 <= GOALS_MS[name] else 'NO':>4} "
            f"{demo_p95:9.1f} {p95 / demo_p95:10.2f}x"
        )
    print(f"load average at the end {_load()} (timings on a shared machine scale with it)")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
