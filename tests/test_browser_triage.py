"""Triage at speed in a real headless Chromium at 1280x800 against a real `streamlit run` server, as a
signed-in reviewer: ten features in a row without scrolling (mouse, status keys, Ctrl+Enter from the
label field), undo after moving on, the link reopened in a new tab (same reviewer, same queue, same
feature), and a sign-out in one tab ending the sign-in in the others."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_text
from tests.dashboard_app import PASSWORD
from tests.test_browser_dashboard import _click_text, _settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

QUEUE = "/Triage?atlas=demo&sae=transcoder-L2"


def _feature(browser) -> str:
    return parse_qs(urlparse(browser.current_url).query)["feature"][0]


IN_VIEW = """
const labels = ["Save and next", "Interpretable", "Polysemantic", "Uninterpretable", "Dead"];
const buttons = [...document.querySelectorAll("button")].filter(b => labels.includes(b.innerText.split("\\n")[0]));
const field = document.querySelector('input[aria-label="Label"]');
if (buttons.length !== labels.length || !field) return null;
const main = document.querySelector('[data-testid="stMain"]');
return {
  rects: [...buttons, field].map(e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, r.right]; }),
  height: window.innerHeight, width: window.innerWidth, scrolled: window.scrollY + (main ? main.scrollTop : 0),
};
"""


def _assert_in_view(browser) -> None:
    """Status buttons, the label field and Save and next all inside the viewport, page not scrolled
    (measured in one script, so a rerun cannot swap an element between two looks)."""
    seen = WebDriverWait(browser, 30).until(lambda d: d.execute_script(IN_VIEW))
    assert seen["scrolled"] == 0
    for top, bottom, right in seen["rects"]:
        assert 0 <= top and bottom <= seen["height"] and right <= seen["width"], seen


def _click_in_place(browser, text: str) -> None:
    """Click the visible <p> with this text where it is, as a reader's mouse does (no scrolling to it);
    tried again while a rerun replaces the element under the pointer."""

    def click(driver) -> bool:
        element = next(e for e in driver.find_elements(By.TAG_NAME, "p") if e.text.strip() == text and e.is_displayed())
        ActionChains(driver).move_to_element(element).click().perform()
        return True

    WebDriverWait(browser, 30, ignored_exceptions=[StaleElementReferenceException, StopIteration]).until(click)


def _press(browser, *keys: str) -> None:
    """Keys typed with the cursor in no text field (where plain shortcut keys act)."""
    browser.execute_script("document.activeElement && document.activeElement.blur();")
    ActionChains(browser).send_keys(*keys).perform()


def _moved_on(browser, before: str) -> str:
    """Wait for the next feature: in the URL, then its heading drawn."""
    WebDriverWait(browser, 60).until(lambda d: _feature(d) != before)
    sae, _, latent = _feature(browser).rpartition(":")
    wait_for_text(browser, f"{sae} · feature {latent}", timeout=60)
    _settle(browser, 0.3)
    return _feature(browser)


def test_ten_features_triaged_without_scrolling_then_undo_and_the_link_in_a_new_tab(tmp_path, monkeypatch):
    user_db = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    store = open_user_store(user_db)
    store.add_account("rita", "reviewer", PASSWORD, "test-setup")
    store.close()  # the server's process takes the file
    seen = []
    with (
        streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT, timeout=120) as url,
        chromium() as browser,
    ):
        browser.set_window_size(1280, 800)
        browser.get(url + QUEUE)
        wait_for_text(browser, "Sign in to SAEscope", timeout=120)
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[aria-label="User name"]'))
        browser.find_element(By.CSS_SELECTOR, 'input[aria-label="User name"]').send_keys("rita")
        browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Password"]').send_keys(PASSWORD)
        _click_text(browser, "p", "Sign in")
        wait_for_text(browser, "Save and next", timeout=120)
        _settle(browser)
        assert "1–4 save with that status and go on" in browser.find_element(By.TAG_NAME, "body").text
        for step in range(10):
            _assert_in_view(browser)
            here = _feature(browser)
            seen.append(here)
            if step % 3 == 0:  # a status key
                _press(browser, "1")
            elif step % 3 == 1:  # a label, then Ctrl+Enter from the label field
                _click_in_place(browser, "polysemantic")  # the status radio's option
                label = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Label"]')
                label.click()
                label.send_keys(f"label {step}")
                label.send_keys(Keys.CONTROL, Keys.ENTER)
            else:  # the mouse
                _click_in_place(browser, "Uninterpretable")
            _moved_on(browser, here)
        assert "10 of" in browser.find_element(By.TAG_NAME, "body").text
        link, at_link = browser.current_url, _feature(browser)
        progress = next(
            line for line in browser.find_element(By.TAG_NAME, "body").text.split("\n") if "reviewed" in line
        )

        _press(browser, "u")  # undo follows the reviewer: back to the tenth feature, its save undone
        assert _moved_on(browser, at_link) == seen[-1]
        wait_for_text(browser, f"Undid your last change, on {seen[-1]}.")
        assert "9 of" in browser.find_element(By.TAG_NAME, "body").text

        browser.switch_to.new_window("tab")  # the same browser: still rita, and the link reproduces the view
        browser.get(link)
        body = wait_for_text(browser, "Save and next", timeout=120)
        _settle(browser)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "Signed in as rita · reviewer" in body and "Sign in to SAEscope" not in body
        assert _feature(browser) == at_link
        sae, _, latent = at_link.rpartition(":")
        assert f"{sae} · feature {latent}" in body and progress.replace("10 of", "9 of") in body

        _click_text(browser, "p", "Sign out")  # signing out here ends the sign-in in the first tab too
        wait_for_text(browser, "Sign in to SAEscope", timeout=60)
        browser.switch_to.window(browser.window_handles[0])
        _press(browser, "s")  # the first tab's next run finds the sign-in ended
        wait_for_text(browser, "Sign in to SAEscope", timeout=60)
    store = open_user_store(user_db)
    try:
        rows = store.audit_frame().to_dict("records")
        saves = list({row["edit_id"]: row for row in rows if row["action"] == "edit"}.values())  # one per save
        assert [f"{row['sae_name']}:{row['latent']}" for row in saves] == seen
        assert {row["reviewer"] for row in saves} == {"rita"}
        assert {row["undoes"] for row in rows if row["action"] == "undo"} == {saves[-1]["edit_id"]}
        now = [store.annotation(row["sae_hash"], row["latent"]) for row in saves]
        assert [a.status for a in now] == ["interpretable", "polysemantic", "uninterpretable"] * 3 + ["unreviewed"]
        assert [now[i].label for i in (1, 4, 7)] == ["label 1", "label 4", "label 7"]
    finally:
        store.close()
