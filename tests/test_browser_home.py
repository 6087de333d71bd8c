"""The README's first command, seen through a real browser: the home page names the model and its SAEs.

(The SAE table itself is a canvas grid, so its rows are checked by tests/test_dashboard.py.)"""

from __future__ import annotations

import time

import pytest

from analysis.paths import REPO_ROOT
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_home_page_renders_the_demo_model_and_saes_in_chromium(demo_metrics):
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        started = time.monotonic()
        browser.get(url)
        body = wait_for_text(browser, "SAEs and transcoders", timeout=60)
        seconds = time.monotonic() - started
    assert "Model: demo bundle model (GPT2LMHeadModel)" in body
    assert f"SAEs and transcoders ({len(demo_metrics['saes'])})" in body
    print(f"home page rendered in {seconds:.2f} s")
