"""The Search by text page on a fresh server in a real browser: its form is on screen while torch and
the model load below it (not a blank page until they have), and the search then runs."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import REPO_ROOT
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

TEXT = 'textarea[aria-label="Text"]'


def _form_while_loading(driver) -> bool:
    body = driver.find_element(By.TAG_NAME, "body").text
    return "Loading the live model (once per server process)" in body and bool(
        driver.find_elements(By.CSS_SELECTOR, TEXT)
    )


def test_the_form_shows_while_the_model_loads_then_the_search_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("SAESCOPE_USER_DB", str(tmp_path / "userdata.duckdb"))
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        browser.get(f"{url}/Search_by_text?atlas=demo&text=And%20the%20LORD%20spake")
        WebDriverWait(browser, 60, poll_frequency=0.1).until(_form_while_loading)
        assert browser.find_element(By.CSS_SELECTOR, TEXT).get_attribute("value") == "And the LORD spake"
        body = wait_for_text(browser, "activation summed over the chosen tokens", timeout=240)
        assert "Live model ready in" in body and "Live model on" in body
