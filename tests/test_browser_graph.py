"""The Graph page in a real browser (a real `streamlit run` server, headless Debian Chromium): a
click at a node's pixel position on the most crowded column of the demo's "The capital of France
is" graph selects exactly that node (and a logit too), and the page's URL, reopened, shows the same
graph with the same selection."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import REPO_ROOT
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

# a node's place on screen, as an offset from the chart's centre, from plotly's own axis mapping
NODE_OFFSET = """
const gd = document.querySelector('.js-plotly-plot');
const size = gd._fullLayout._size, box = gd.getBoundingClientRect();
for (const trace of gd.data) {
  const i = (trace.customdata || []).indexOf(arguments[0]);
  if (i >= 0) return [size.l + gd._fullLayout.xaxis.l2p(trace.x[i]) - box.width / 2,
                      size.t + gd._fullLayout.yaxis.l2p(trace.y[i]) - box.height / 2];
}
return null;"""
DRAWN = "const g = document.querySelector('.js-plotly-plot'); return g && g.data ? g.data.flatMap(t => t.customdata || []) : null;"


def _drawn(browser) -> list[str]:
    return WebDriverWait(browser, 120).until(lambda d: d.execute_script(DRAWN))


def _clicked(browser) -> str | None:
    return (parse_qs(urlparse(browser.current_url).query).get("clickedId") or [None])[0]


def _click_node(browser, node: str) -> None:
    """Move the mouse to the node's pixel position on the chart and click there, as a reader does."""
    chart = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    time.sleep(0.5)
    dx, dy = browser.execute_script(NODE_OFFSET, node)
    ActionChains(browser).move_to_element_with_offset(chart, round(dx), round(dy)).pause(0.3).click().perform()
    WebDriverWait(browser, 90).until(lambda d: _clicked(d) == node)


def test_a_click_on_the_crowded_column_selects_the_node_under_the_cursor_and_the_url_reopens_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SAESCOPE_USER_DB", str(tmp_path / "userdata.duckdb"))
    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        browser.get(f"{url}/Graph?atlas=demo&prompt=The%20capital%20of%20France%20is")
        wait_for_text(browser, "nodes and", timeout=300)
        drawn = _drawn(browser)
        last = max(int(node.split("@")[1]) for node in drawn if node.startswith("feature/"))
        crowded = sorted(n for n in drawn if n.startswith("feature/") and n.endswith(f"@{last}"))
        layer = max({n.split("/")[1] for n in crowded}, key=lambda at: sum(n.split("/")[1] == at for n in crowded))
        column = [n for n in crowded if n.split("/")[1] == layer]
        assert len(column) >= 20, "the demo's last position holds a crowded layer"
        middle, neighbour = column[len(column) // 2], column[len(column) // 2 + 1]
        for node in (middle, neighbour):  # two neighbours in the most crowded cell, each exactly
            _click_node(browser, node)
            body = wait_for_text(browser, "Top inputs", timeout=60)
            latent = node.split("/")[2].split("@")[0]
            assert f"#{latent} @{last}" in body
        logit = next(n for n in drawn if n.startswith("logit/"))
        _click_node(browser, logit)
        wait_for_text(browser, "Top inputs", timeout=60)

        link = browser.current_url
        browser.get(link)  # a new session from the copied link
        wait_for_text(browser, "Top inputs", timeout=120)
        assert _clicked(browser) == logit and sorted(_drawn(browser)) == sorted(drawn)
        lit = browser.execute_script(
            "return document.querySelector('.js-plotly-plot').data.filter(t => t.mode === 'lines'"
            " && !t.line.color.endsWith('0.12)')).length"
        )
        assert lit > 0, "the reopened view highlights the selected logit's edges"
