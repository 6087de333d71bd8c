"""A real Streamlit server and a real headless Chromium, for end-to-end tests of the dashboard."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def streamlit_server(app: Path, cwd: Path, timeout: float = 60) -> AbstractContextManager[str]:
    """Run ``streamlit run app`` on a free port until the context exits; yields its URL."""
    return served([sys.executable, "-m", "streamlit", "run", str(app)], cwd, timeout)


@contextmanager
def served(command: list[str], cwd: Path, timeout: float = 60) -> Iterator[str]:
    """Run a command that starts Streamlit, given a free port, until the context exits; yields its URL."""
    port = _free_port()
    process = subprocess.Popen(
        [*command, "--server.port", str(port), "--server.headless", "true"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    assert process.stdout is not None  # stdout=PIPE above
                    raise RuntimeError(f"streamlit did not start: {process.stdout.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@contextmanager
def chromium(downloads: Path | None = None) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, driven by its chromedriver; with ``downloads``, files a page
    offers for download are saved there without asking."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    if downloads is not None:  # headless Chromium also needs telling through the DevTools protocol
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()


class PageRaised(AssertionError):
    """The page drew a Python exception (Streamlit's traceback box) while a test waited for text."""


def _text_or_exception(driver: webdriver.Chrome, text: str) -> bool:
    body = driver.find_element(By.TAG_NAME, "body").text
    if text in body:
        return True
    try:
        raised = [element.text for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')]
    except StaleElementReferenceException:  # a rerun redrew the page meanwhile: look again
        return False
    if raised:
        raise PageRaised(f"{driver.current_url} shows an exception: {raised[0][:3000]}")
    return False


def wait_for_text(driver: webdriver.Chrome, text: str, timeout: float = 30) -> str:
    """Wait until ``text`` is visible in the page body; return the body text. A traceback drawn on
    the page fails at once, with its text, instead of after the whole timeout."""
    WebDriverWait(driver, timeout).until(lambda d: _text_or_exception(d, text))
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_element(driver: webdriver.Chrome, css: str, timeout: float = 30) -> WebElement:
    """The first element matching ``css`` once the page has drawn it (a rerun may draw it late)."""
    found: list[WebElement] = WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))
    return found[0]
