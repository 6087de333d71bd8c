"""The dashboard end to end in a real browser: a real `streamlit run` server and headless Debian
Chromium. Home -> feature table -> a feature, labelled, reloaded (the label and its audit entry are
still there); every page is screenshotted into a temporary folder (and over the README's in
docs/screenshots/ with SAESCOPE_UPDATE_SCREENSHOTS=1); a hostile atlas's tokens show as text and run nothing."""

from __future__ import annotations

import getpass
import os
import shutil
import time
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import REPO_ROOT
from tests.browser import chromium, streamlit_server, wait_for_text
from tests.dashboard_app import make_hostile_atlas

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

README_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
ROW_Y = 122  # px from the grid's top to the middle of its second data row
LABEL = "verbs of placing: put / let <b>not bold</b>"


def _settle(browser, seconds: float = 1.5) -> None:
    """Wait until Streamlit has finished running the script (no 'Running...' status) and paint."""
    WebDriverWait(browser, 60).until(
        lambda d: (
            "Running"
            not in d.execute_script(
                "const w = document.querySelector('[data-testid=\"stStatusWidget\"]'); return w ? w.innerText : '';"
            )
        )
    )
    time.sleep(seconds)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """A folder for this module's screenshots; with SAESCOPE_UPDATE_SCREENSHOTS=1 they then replace the README's."""
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    if os.environ.get("SAESCOPE_UPDATE_SCREENSHOTS") == "1":
        for shot in folder.glob("*.png"):
            shutil.copyfile(shot, README_SCREENSHOTS / shot.name)


def _shoot(browser, folder, name: str) -> None:
    height = browser.execute_script(
        "const m = document.querySelector('[data-testid=\"stMainBlockContainer\"]'); return m.scrollHeight;"
    )
    browser.set_window_size(1400, min(max(int(height) + 80, 900), 3000))
    time.sleep(1)
    assert browser.save_screenshot(str(folder / f"{name}.png"))
    browser.set_window_size(1400, 1000)


def _dataframe_cells(browser) -> str:
    """The text of every cell of every dataframe on the page (Streamlit draws dataframes on a canvas
    and keeps an accessible table of the cells beside it)."""
    cells = browser.find_elements(
        By.CSS_SELECTOR,
        '[data-testid="stDataFrame"] [role="gridcell"], [data-testid="stDataFrame"] [role="columnheader"]',
    )
    return "\n".join(cell.get_attribute("innerText") or "" for cell in cells)


def _click_text(browser, tag: str, text: str) -> None:
    # a rerun may redraw the page while it is searched: a stale element is looked for again
    element = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: next(
            (e for e in d.find_elements(By.TAG_NAME, tag) if e.text.strip() == text and e.is_displayed()), None
        )
    )
    assert element is not None  # until() returns only a truthy value (it raises on timeout)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


@pytest.fixture
def served_dashboard(tmp_path, monkeypatch):
    """A server over the demo atlas plus a hostile one, with a fresh user-data file."""
    make_hostile_atlas(tmp_path / "atlases")
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(tmp_path / "atlases"))
    monkeypatch.setenv("SAESCOPE_USER_DB", str(tmp_path / "userdata.duckdb"))
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        yield url, browser


def test_label_a_feature_from_the_table_and_find_it_after_a_reload(served_dashboard, screenshots):
    url, browser = served_dashboard
    browser.get(url)
    wait_for_text(browser, "SAEs and transcoders", timeout=60)
    _settle(browser)
    _shoot(browser, screenshots, "home")

    _click_text(browser, "p", "Browse the features")
    wait_for_text(browser, "features match")
    _settle(browser)
    _shoot(browser, screenshots, "features")

    grid = browser.find_element(By.CSS_SELECTOR, '[data-testid="stDataFrame"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'start'});", grid)
    time.sleep(0.5)
    # the row-selection checkbox sits in the first column; aim at the second data row (the table
    # lists live, labelled features first, and one of them makes a good screenshot)
    ActionChains(browser).move_to_element_with_offset(
        grid, -grid.size["width"] // 2 + 16, -grid.size["height"] // 2 + ROW_Y
    ).click().perform()
    WebDriverWait(browser, 60).until(lambda d: "/Feature?" in d.current_url)
    latent = int(parse_qs(urlparse(browser.current_url).query)["latent"][0])
    assert "atlas=demo" in browser.current_url and "sae=resid-L2" in browser.current_url
    wait_for_text(browser, f"resid-L2 · feature {latent}", timeout=60)

    assert f"Signed in as {getpass.getuser()}" in browser.find_element(By.TAG_NAME, "body").text  # no sign-in set up
    _click_text(browser, "p", "interpretable")
    label = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Label"]')
    label.send_keys(LABEL)
    _click_text(browser, "p", "Save")
    wait_for_text(browser, "Audit log", timeout=60)
    _settle(browser)

    browser.refresh()
    wait_for_text(browser, f"interpretable: {LABEL}", timeout=60)
    _settle(browser)
    # the audit log is a dataframe: its cells are in the grid's accessible table once the grid has drawn
    audit = WebDriverWait(browser, 60).until(lambda d: (text := _dataframe_cells(d)) and "unreviewed" in text and text)
    # who edited which fields (the grid draws the columns in view; the label itself is checked above)
    assert getpass.getuser() in audit and "label" in audit and "status" in audit and "unreviewed" in audit
    assert not browser.find_elements(By.XPATH, "//b[text()='not bold']")
    _shoot(browser, screenshots, "feature")

    browser.get(f"{url}/Triage?atlas=demo&sae=transcoder-L1&min_density=0.001")
    wait_for_text(browser, "reviewed", timeout=60)
    _settle(browser)
    _shoot(browser, screenshots, "triage")
    browser.get(f"{url}/Lists?atlas=demo")
    wait_for_text(browser, "Exports", timeout=60)
    _settle(browser)
    _shoot(browser, screenshots, "lists")


def test_hostile_tokens_are_shown_as_text_and_run_nothing(served_dashboard):
    url, browser = served_dashboard
    browser.get(f"{url}/Feature?atlas=hostile&sae=resid-L2&latent=17")
    wait_for_text(browser, "Top 20 examples", timeout=60)
    _settle(browser)
    body = wait_for_text(browser, "<img src=x onerror=alert(1)>", timeout=30)  # the examples' HTML can paint last
    assert "<script>alert('label')</script> & \"" in body
    assert "⟨U+202E⟩⟨U+0007⟩</div><script>alert(2)</script>" in body
    assert not browser.find_elements(By.CSS_SELECTOR, "section.stMain img[src='x']")
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text


def test_steering_turns_the_text_toward_a_latents_domain_in_the_browser(served_dashboard, screenshots):
    """resid-L2 #938 promotes ' LORD', ' children', ' congregation': steered, a software prompt
    drifts into the Bible's words; the run is recorded and listed in the history."""
    url, browser = served_dashboard
    browser.get(f"{url}/Steer?atlas=demo&steer=resid-L2:938:25&method=additive")
    # a fresh server: the loading stages show at once, not a blank page while torch and the model load
    wait_for_text(browser, "Loading the live model (once per server process)", timeout=30)
    wait_for_text(browser, "imports (torch, transformer-lens, sae-lens)", timeout=5)
    body = wait_for_text(browser, "Live model on", timeout=120)
    assert "after this server's first request for it (imports" in body
    _settle(browser)
    prompt = WebDriverWait(browser, 60).until(  # the form draws after the model's caption on a busy machine
        lambda d: d.find_element(By.CSS_SELECTOR, 'textarea[aria-label="Prompt"]')
    )
    prompt.send_keys(Keys.CONTROL, "a")
    prompt.send_keys(Keys.DELETE)
    prompt.send_keys("To install the package, run", Keys.TAB)
    _settle(browser, 0.5)
    _click_text(browser, "p", "Generate")
    body = wait_for_text(browser, "Recorded as run", timeout=300)  # 2 × 64 tokens on a shared 2-core machine
    _settle(browser)
    steered = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stHtml"]')[1].text
    assert any(word in steered for word in ("LORD", "children", "congregation", "Israel", "God")), steered
    assert "Next-token distribution at the first difference" in body
    _shoot(browser, screenshots, "steer")
    assert parse_qs(urlparse(browser.current_url).query)["prompt"] == ["To install the package, run"]
    browser.get(browser.current_url)  # the link reopened: the same prompt, not the default one
    WebDriverWait(browser, 60).until(
        lambda d: any(
            e.get_attribute("value") == "To install the package, run"
            for e in d.find_elements(By.CSS_SELECTOR, 'textarea[aria-label="Prompt"]')
        )
    )

    browser.get(f"{url}/Search_by_text?atlas=demo&text=And%20the%20LORD%20spake%20unto%20Moses")
    wait_for_text(browser, "activation summed over the chosen tokens", timeout=90)
    _settle(browser)
    _shoot(browser, screenshots, "search")


def _click_point(browser, trace_name: str, index: int) -> None:
    """Click one point of a named trace of the page's plotly chart, as a reader does."""
    trace = WebDriverWait(browser, 60).until(
        lambda d: d.execute_script(
            "const gd = document.querySelector('.js-plotly-plot');"
            "return gd && gd.data ? gd.data.findIndex(t => t.name === arguments[0]) : null;",
            trace_name,
        )
    )
    points = browser.find_elements(
        By.CSS_SELECTOR, f".js-plotly-plot g.scatterlayer g.trace:nth-child({trace + 1}) path.point"
    )
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", points[index])
    ActionChains(browser).move_to_element(points[index]).pause(0.3).click().perform()


def _choose(browser, label: str, option: str) -> None:
    """Pick an option of a Streamlit multiselect by typing its start, as a reader does."""
    box = browser.find_element(By.CSS_SELECTOR, f'input[aria-label^="{label}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
    box.click()
    box.send_keys(option)
    time.sleep(0.5)
    box.send_keys(Keys.ENTER)


def test_a_graph_computed_in_the_browser_gets_a_supernode_of_two_clicked_nodes_and_is_saved(
    served_dashboard, screenshots
):
    url, browser = served_dashboard
    browser.get(f"{url}/Graph?atlas=demo&prompt=And%20God%20said%2C%20Let%20there%20be%20light")
    wait_for_text(browser, "nodes and", timeout=120)
    _settle(browser)
    names, clicked = [], []

    def url_value(key: str) -> str:
        return (parse_qs(urlparse(browser.current_url).query).get(key) or [""])[0]

    for index in (0, 1):
        _click_point(browser, "feature", index)
        # a rerun of this page can outlast _settle on a busy machine: wait for what it writes in the URL
        WebDriverWait(browser, 60).until(lambda _: url_value("clickedId") not in ("", *clicked))
        clicked.append(url_value("clickedId"))
        wait_for_text(browser, "Top inputs", timeout=60)
        _settle(browser)
        names.append(browser.find_element(By.CSS_SELECTOR, 'input[aria-label^="Node"]').get_attribute("value"))
        _click_text(browser, "p", "Pin to subgraph")
        WebDriverWait(browser, 60).until(lambda _: len(url_value("pinnedIds").split(",")) == len(clicked))
        _settle(browser)
    browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Supernode name"]').send_keys("light words")
    for name in names:
        _choose(browser, "Pinned nodes to group", name.split(" · ")[0])
    _click_text(browser, "p", "Group")
    body = wait_for_text(browser, "Supernode light words", timeout=60)
    _settle(browser)
    _click_text(browser, "p", "Save graph")
    body = wait_for_text(browser, "Saved as graph", timeout=60)
    assert all(name.split(" · ")[0] in body for name in names)
    _settle(browser)
    browser.execute_script("document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0);")
    _shoot(browser, screenshots, "graph")
