"""Two reviewers on one feature in two real headless Chromium sessions against a real `streamlit
run` server: each signs in with their own account, both open the feature, Bob saves first, and
Alice's save is not lost: she sees who changed what, her typed label stays, and she overwrites."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from analysis.paths import REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_element, wait_for_text
from tests.dashboard_app import PASSWORD
from tests.test_browser_dashboard import _click_text, _settle

FEATURE_URL = "/Feature?atlas=demo&sae=resid-L2&latent=9"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _sign_in_and_open(browser, url: str, name: str) -> None:
    browser.get(url + FEATURE_URL)
    wait_for_text(browser, "Sign in to SAEscope", timeout=120)
    wait_for_element(browser, 'input[aria-label="User name"]').send_keys(name)
    browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Password"]').send_keys(PASSWORD)
    _click_text(browser, "p", "Sign in")
    wait_for_text(browser, "resid-L2 · feature 9", timeout=120)
    _settle(browser)


def _type_label(browser, text: str) -> None:
    label = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Label"]')
    label.send_keys(Keys.CONTROL, "a")
    label.send_keys(text)


def test_two_reviewers_in_two_browsers_lose_nothing(tmp_path, monkeypatch):
    user_db = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    store = open_user_store(user_db)
    for name in ("alice", "bob"):
        store.add_account(name, "reviewer", PASSWORD, "test-setup")
    store.close()  # the server's process takes the file
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT, timeout=120) as url:
        with chromium() as alice, chromium() as bob:
            _sign_in_and_open(alice, url, "alice")
            _sign_in_and_open(bob, url, "bob")
            _type_label(bob, "bob's label")
            _click_text(bob, "p", "Save")
            wait_for_text(bob, "Saved feature #9 as bob.", timeout=60)

            _type_label(alice, "alice's label")
            _click_text(alice, "p", "Save")
            body = wait_for_text(alice, "bob changed this feature (label)", timeout=60)
            assert "Your values are still in the form" in body
            label = alice.find_element(By.CSS_SELECTOR, 'input[aria-label="Label"]').get_attribute("value")
            assert label == "alice's label"
            _click_text(alice, "p", "Overwrite with mine")
            wait_for_text(alice, "Saved feature #9 as alice.", timeout=60)
    store = open_user_store(user_db)
    try:
        edits = store.audit_frame().query("action == 'edit' and field == 'label'")
        assert list(edits[["reviewer", "old_value", "new_value"]].itertuples(index=False)) == [
            ("bob", "", "bob's label"),
            ("alice", "bob's label", "alice's label"),
        ]
    finally:
        store.close()
