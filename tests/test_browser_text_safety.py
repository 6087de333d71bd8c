"""Markdown typed by a reviewer or put into a URL, in a real browser: a real `streamlit run` server,
headless Debian Chromium and a tiny image server on 127.0.0.1. A markdown image in a label, a list,
a note or the ``atlas=`` URL value must show as its literal text on every page, and the image
server must get no request at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import duckdb
import pytest
from selenium.webdriver.common.by import By

from analysis.paths import DEMO_DIR, REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# In this order on purpose: Steer starts loading the live model in its session's thread and Graph,
# opened next, imports circuit-tracer while that load still runs; the two imports once raced
# (dashboard/live/model_stack.py), and wait_for_text fails on the traceback that drew.
PAGES = ["", "Features", "Feature", "Triage", "Lists", "Steer", "Search_by_text", "Graph"]


class _ImageServer(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def image_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on a free local port that records every request; yields (base URL, requests)."""
    handler = type("Recorder", (_ImageServer,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


def _field_values(browser) -> list[str]:
    """What the page's text fields and select boxes show (not part of the body's text)."""
    return browser.execute_script(
        "return [...document.querySelectorAll('input, textarea')].map(e => e.value)"
        ".concat([...document.querySelectorAll('[data-testid=\"stSelectbox\"]')].map(e => e.innerText));"
    )


def test_markdown_images_in_labels_lists_and_urls_are_text_and_fetch_nothing(tmp_path, monkeypatch, image_server):
    base, requests = image_server
    hostile = f"**Admin** ![b]({base}/x.png)"
    user_db = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as connection:
        sae_hash = connection.execute("SELECT content_hash FROM saes WHERE name = 'resid-L2'").fetchall()[0][0]
    store = open_user_store(user_db)
    store.annotate(sae_hash, "resid-L2", 17, "carol", status="interpretable", label=hostile, notes=f"# {hostile}")
    store.create_list(hostile, "carol", description=hostile)
    store.add_to_list(hostile, sae_hash, "resid-L2", 17, "carol", note=hostile)
    store.close()  # the server opens the file next

    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        for name in PAGES:
            query = {"atlas": f"![b]({base}/atlas.png)"}
            if name == "Feature":
                query |= {"sae": "resid-L2", "latent": "17"}
            if name == "Triage":
                query |= {"feature": "resid-L2:17"}
            browser.get(f"{url}/{name}?{urlencode(query)}")
            wait_for_text(browser, "Unknown atlas", timeout=180)
            time.sleep(1)  # time for an image, were one drawn, to be fetched
            assert requests == [], (name, requests)
            body = wait_for_text(browser, f"Unknown atlas '![b]({base}/atlas.png)'", timeout=5)
            if name in ("Feature", "Triage"):
                wait_for_text(browser, "Undo my last change")
                assert hostile in _field_values(browser)  # the label in the triage form
            if name == "Feature":
                assert f"interpretable: {hostile}" in body
            if name == "Lists":
                wait_for_text(browser, "1 features")
                assert hostile in _field_values(browser) + [browser.find_element(By.TAG_NAME, "body").text]
            images = browser.execute_script(
                "return [...document.querySelectorAll('img')].map(i => i.src).filter(s => s.includes(arguments[0]));",
                base,
            )
            assert not images, (name, images)
            bold = browser.execute_script(
                "return [...document.querySelectorAll('strong, b')].some(e => e.textContent.includes('Admin'));"
            )
            assert not bold, name
        time.sleep(2)  # an image the last page asked for would have arrived by now
        assert requests == [], requests
