"""Sign-in from a trusted reverse proxy's header, as a proxy would send it: a real `streamlit run`
server with SAESCOPE_AUTH_HEADER set, and headless Chromium adding the header to every request it
makes (the page and its WebSocket) the way a proxy in front of the server would."""

from __future__ import annotations

import pytest

from analysis.paths import REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HEADER = "X-Forwarded-User"
FEATURE_URL = "/Feature?atlas=demo&sae=resid-L2&latent=9"


def test_the_proxy_header_signs_in_and_its_absence_is_refused(tmp_path, monkeypatch):
    user_db = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    monkeypatch.setenv("SAESCOPE_AUTH_HEADER", HEADER)
    store = open_user_store(user_db)
    store.add_account("carol", "viewer", "not-used-behind-a-proxy", "test-setup")
    store.close()  # the server's process takes the file
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT, timeout=120) as url:
        with chromium() as proxied, chromium() as direct:
            proxied.execute_cdp_cmd("Network.enable", {})
            proxied.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {HEADER: "carol"}})
            proxied.get(url + FEATURE_URL)
            wait_for_text(proxied, "Signed in as carol · viewer", timeout=120)
            wait_for_text(proxied, "resid-L2 · feature 9", timeout=60)  # the sidebar draws before the page's body
            direct.get(url + FEATURE_URL)
            body = wait_for_text(direct, f"takes who you are from the {HEADER} header", timeout=120)
            assert "Signed in as" not in body
