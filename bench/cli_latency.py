"""Wall time of the model commands on the demo, to the first output line and to the end, for two
checkouts run alternately (the machine is shared: alternating spreads its load over both).

    python bench/cli_latency.py --before /tmp/before-checkout --repeats 2

``--before`` is another checkout of SAEscope (e.g. ``git worktree add`` or ``git archive`` of an
older commit, with data/demo linked in); this checkout is "after". Each run is printed with the
1-minute load average when it started; the summary is the median per command and checkout.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AFTER = Path(__file__).resolve().parent.parent
COMMANDS = {
    "info": ["info", "--device", "cpu"],
    "search-text": ["search-text", "--text", "And the LORD spake unto Moses", "--device", "cpu"],
    "steer": [
        "steer",
        *("--prompt", "To install the package, run", "--feature", "resid-L2:938:25"),
        *("--max-new-tokens", "12", "--device", "cpu"),
    ],
    "graph": ["graph", "--prompt", "The capital of France is", "--out", "{tmp}/graph.json", "--device", "cpu"],
    "steer-refused": ["steer", "--prompt", "hi", "--feature", "resid-L2:227"],
}


def timed(checkout: Path, argv: list[str]) -> tuple[float, float, float, int]:
    """Seconds to the first line on stdout or stderr, seconds to exit, CPU seconds (user + system:
    what the command itself computed, much less moved by other jobs than wall time), and the exit code."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "analysis", *argv],
        cwd=checkout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None  # stdout=PIPE above
    first = None
    for _line in process.stdout:
        first = first if first is not None else time.perf_counter() - started
    code = process.wait()
    end = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return (first if first is not None else end), end, cpu, code


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", help="comma-separated command names (default: all)")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(COMMANDS)
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    turn = 0  # which checkout goes first alternates from run to run, across commands too
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            argv = [part.format(tmp=tmp) for part in COMMANDS[name]]
            for _ in range(args.repeats):
                order = [("before", args.before), ("after", AFTER)]
                turn += 1
                for label, checkout in order if turn % 2 else order[::-1]:
                    load = os.getloadavg()[0]
                    first, end, cpu, code = timed(checkout, argv)
                    results.setdefault((name, label), []).append((first, end, cpu))
                    print(
                        f"{name:<22} {label:<6} load {load:5.2f}  first line {first:6.1f} s  end {end:6.1f} s  "
                        f"cpu {cpu:6.1f} s  rc {code}",
                        flush=True,
                    )
    print("\nmedians (first line / end / CPU):")
    for name in chosen:
        cells = []
        for label in ("before", "after"):
            runs = results[(name, label)]
            first, end, cpu = (statistics.median(r[i] for r in runs) for i in range(3))
            cells.append(f"{label} {first:.1f} / {end:.1f} / {cpu:.1f} s")
        print(f"  {name:<22} " + "   ".join(cells))


if __name__ == "__main__":
    main()
