"""The governance pages in a real browser (a real `streamlit run` server, headless Debian Chromium),
as a user meets them: on Detectors, a JSONL upload trained into a detector whose metrics (text and
token level) stand beside the baselines and match the metrics.json the page offers, then a pasted
text scored token by token; on Watchlists, a watchlist built from a saved feature list, run against
the loaded model and found in the history; on Lists, the evidence-pack button's zip, downloaded by
Chromium, verified by ``python -m analysis evidence verify``. One server and one browser for all."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from analysis.governance.pii_data import generate
from analysis.paths import REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_element, wait_for_text
from tests.test_browser_dashboard import _click_text, _dataframe_cells, _settle
from tests.test_detectors import atlas_sae_hash

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

LIST = "scripture watch"
WATCHED = (("resid-L2", 345), ("transcoder-L2", 3))
PASTED = "Please write to anna.schmidt@example.org before Friday."
TEXTS = "The meeting has been moved to Thursday afternoon.\nShe bought a new bicycle and rode it to work."


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server over the demo bundle with a user-data file holding one feature list, its own watch
    runs folder, and a Chromium that saves downloads into a folder of its own."""
    folder = tmp_path_factory.mktemp("governance")
    downloads = folder / "downloads"
    downloads.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SAESCOPE_USER_DB", str(folder / "userdata.duckdb"))
        env.setenv("SAESCOPE_WATCH_RUNS", str(folder / "runs"))
        store = open_user_store(folder / "userdata.duckdb")
        store.create_list(LIST, "dana")
        for sae, latent in WATCHED:
            store.add_to_list(LIST, atlas_sae_hash(sae), sae, latent, "dana")
        store.close()  # the server's process takes the file
        with (
            streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT, timeout=120) as url,
            chromium(downloads) as browser,
        ):
            yield SimpleNamespace(url=url, browser=browser, folder=folder, downloads=downloads)


def _downloaded(downloads: Path, name: str, timeout: float = 60) -> Path:
    """The file Chromium has finished saving under this name (no .crdownload left)."""
    path = downloads / name
    deadline = time.monotonic() + timeout
    while not path.is_file() or list(downloads.glob("*.crdownload")):
        assert time.monotonic() < deadline, f"{name} was not downloaded: {sorted(downloads.iterdir())}"
        time.sleep(0.2)
    return path


def _type_into(browser, css: str, text: str) -> None:
    """Replace a field's value and leave it (Tab), so Streamlit takes the value as a user's edit."""
    field = wait_for_element(browser, css)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
    field.click()
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    field.send_keys(text, Keys.TAB)
    _settle(browser, 0.3)


def _click_button(browser, label: str, timeout: float = 60) -> None:
    """A Streamlit button (or download button) by its label, as a mouse clicks it."""

    def find(driver):
        for button in driver.find_elements(By.TAG_NAME, "button"):
            if button.text.strip() == label and button.is_displayed():
                return button
        return None

    button = WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(find)
    assert button is not None  # until() returns only a truthy value
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()


def _cells(browser, *wanted: str) -> str:
    """The page's dataframe cells once every ``wanted`` text is among them."""
    return WebDriverWait(browser, 60).until(
        lambda d: (text := _dataframe_cells(d)) and all(w in text for w in wanted) and text
    )


def test_a_detector_trained_from_an_upload_beside_its_baselines_then_a_pasted_text_scored(served):
    browser, data = served.browser, served.folder / "pii.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in generate(48, 3)))
    browser.get(f"{served.url}/Detectors?atlas=demo")
    wait_for_text(browser, "Train from", timeout=240)  # the live model loads on the first live page
    _settle(browser, 0.5)
    wait_for_element(browser, '[data-testid="stFileUploader"] input[type="file"]').send_keys(str(data))
    wait_for_text(browser, "48 texts: 24 labelled 1, 24 labelled 0.", timeout=60)
    _type_into(browser, 'input[aria-label="Texts to time"]', "0")  # no cost timing: a quick test
    _click_button(browser, "Train detector")
    wait_for_text(browser, "Against the baselines", timeout=300)
    _settle(browser)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Per token, against the spans:" in body and "threshold is the F1-best on the training split" in body
    cells = _cells(
        browser,
        "SAE-feature probe (the detector)",
        "dense probe on the raw activations at the same hook",
        "PII regexes (email, phone, card, IBAN)",
        "token F1",
    )
    _click_button(browser, "metrics.json")
    metrics = json.loads(_downloaded(served.downloads, "metrics.json").read_text())
    assert metrics["split"]["test"] == 12 and set(metrics["methods"]) == {"detector", "dense_probe", "regex"}
    shown = {round(float(cell), 9) for cell in cells.split("\n") if re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", cell)}
    for name in ("detector", "dense_probe", "regex"):  # the tables show the numbers the file holds
        assert round(metrics["methods"][name]["f1"], 9) in shown, (name, cells)
        assert round(metrics["tokens"]["methods"][name]["f1"], 9) in shown, (name, cells)
    assert metrics["tokens"]["tokens"]["test_positive"] > 0

    _type_into(browser, 'textarea[aria-label="Text to score"]', PASTED)
    _click_button(browser, "Score")
    body = wait_for_text(browser, "Text score ", timeout=120)
    assert re.search(r"Text score [01]\.\d{3}: (not )?flagged \(threshold 0\.5\)", body), body
    tokens = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stHtml"] span[title]')
    )
    assert "".join(t.get_attribute("textContent") or "" for t in tokens) == PASTED, "every token but BOS, as text"
    titles = [t.get_attribute("title") or "" for t in tokens]
    assert all(" detector score " in title for title in titles), titles[:3]
    scores = [float(title.rsplit(" ", 1)[1]) for title in titles]
    assert all(0 <= s <= 1 for s in scores) and len(set(scores)) > 1


def _choose(browser, label: str, option: str) -> None:
    """Pick a selectbox option by typing it, as a reader does."""
    box = wait_for_element(browser, f'input[aria-label="{label}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()
    box.send_keys(option)
    time.sleep(0.5)
    box.send_keys(Keys.ENTER)
    _settle(browser, 0.5)


def test_a_watchlist_built_from_a_feature_list_runs_on_the_loaded_model_and_shows_in_the_history(served):
    browser = served.browser
    browser.get(f"{served.url}/Watchlists?atlas=demo")
    wait_for_text(browser, "Features from", timeout=240)
    _settle(browser, 0.5)
    _choose(browser, "Features from", LIST)
    wait_for_text(browser, "2 features in the list")
    _type_into(browser, 'textarea[aria-label="Texts the checks measure on, one per line"]', TEXTS)
    _type_into(browser, 'input[aria-label="Watchlist name"]', "browser watch")
    _click_button(browser, "Build watchlist")
    wait_for_text(browser, "Built a watchlist of 2 features; it is in the Run tab.", timeout=120)
    _settle(browser)

    _click_text(browser, "p", "Run")
    toml = wait_for_element(browser, 'textarea[aria-label="Watchlist (TOML, format = 1)"]').get_attribute("value")
    assert toml and 'name = "browser watch"' in toml and toml.count("[[features]]") == 2
    _click_button(browser, "Run against the loaded model")
    body = wait_for_text(browser, "Recorded as run ", timeout=120)
    assert "All checks hold." in body
    run_id = re.search(r"Recorded as run (\S+) in", body).group(1)  # pyright: ignore[reportOptionalMemberAccess]
    record = json.loads((served.folder / "runs" / f"{run_id}.json").read_text())
    assert record["watchlist"]["name"] == "browser watch" and record["passed"]
    assert [(c["feature"], c["status"]) for c in record["checks"]] == [
        ("resid-L2-345", "passed"),
        ("transcoder-L2-3", "passed"),
    ]

    _click_text(browser, "p", "History")
    cells = _cells(browser, run_id, "browser watch")
    assert "passed" in cells and "resid-L2-345-mean-rise" in cells


def test_the_lists_page_evidence_pack_downloads_and_verifies(served):
    browser = served.browser
    browser.get(f"{served.url}/Lists?atlas=demo&list={LIST.replace(' ', '%20')}")
    wait_for_text(browser, "Evidence pack for a committee", timeout=120)
    _settle(browser, 0.5)
    _click_text(browser, "p", "Evidence pack for a committee (report, data, checksums)")
    _click_button(browser, "Make evidence pack")
    _click_button(browser, "Download evidence pack (zip)", timeout=180)  # the PDF is printed by Chromium
    pack = _downloaded(served.downloads, "evidence-scripture-watch.zip", timeout=120)
    verified = subprocess.run(
        [sys.executable, "-m", "analysis", "evidence", "verify", str(pack)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
