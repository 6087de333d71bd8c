"""Seconds from `streamlit run` to the first page rendered in headless Chromium: the Home page on
the demo atlas against a one-line Streamlit app started the same way in the same run (what
Streamlit itself costs). Goal (issue 4): Home within 3 s.

    python bench/dashboard_first_render.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
from tests.browser import chromium, streamlit_server, wait_for_text  # noqa: E402

BASELINE_APP = 'import streamlit as st\nst.title("Baseline page")\n'


def first_render_seconds(app: Path, text: str, browser) -> float:
    """From starting the server to ``text`` showing in the browser."""
    started = time.perf_counter()
    with streamlit_server(app, cwd=REPO_ROOT) as url:
        browser.get(url)
        wait_for_text(browser, text, timeout=120)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, chromium() as browser:
        baseline_app = Path(folder) / "baseline.py"
        baseline_app.write_text(BASELINE_APP)
        home, baseline = [], []
        for _ in range(args.repeats):
            baseline.append(first_render_seconds(baseline_app, "Baseline page", browser))
            home.append(first_render_seconds(REPO_ROOT / "dashboard" / "Home.py", "SAEs and transcoders", browser))
    home_s, baseline_s = statistics.median(home), statistics.median(baseline)
    print(
        f"first render, median of {args.repeats}: Home {home_s:.2f} s, one-line app {baseline_s:.2f} s, "
        f"ratio {home_s / baseline_s:.2f}; goal Home <= 3 s: {'met' if home_s <= 3 else 'NOT met'}; "
        f"load average {' '.join(f'{value:.2f}' for value in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
