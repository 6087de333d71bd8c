"""The Graph page in a real browser (a real `streamlit run` server, headless Debian Chromium): a
click at a node's pixel position on the most crowded column of the demo's "The capital of France
is" graph selects exactly that node (and a logit too), and the page's URL, reopened, shows the same
graph with the same selection; the mouse over a node lights exactly its edges and dims the rest,
and moving it away restores the figure."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import REPO_ROOT
from dashboard.graph.view import DIM_NODE
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

GRAPH = "/Graph?atlas=demo&prompt=The%20capital%20of%20France%20is"
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
# what the plot shows now: each trace's kind, points, opacity and node opacities, from the plotly div
TRACES = """return document.querySelector('.js-plotly-plot').data.map(t => ({
  mode: t.mode, meta: t.meta || null, opacity: t.opacity === undefined ? 1 : t.opacity, x: t.x, y: t.y,
  ids: t.customdata || null, markers: t.marker && Array.isArray(t.marker.opacity) ? t.marker.opacity : null}));"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module (it computes the demo graph once and caches it) and one browser."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAESCOPE_USER_DB", str(tmp_path_factory.mktemp("user") / "userdata.duckdb"))
        with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
            yield url, browser


def _drawn(browser) -> list[str]:
    return WebDriverWait(browser, 120).until(lambda d: d.execute_script(DRAWN))


def _clicked(browser) -> str | None:
    return (parse_qs(urlparse(browser.current_url).query).get("clickedId") or [None])[0]


def _crowded_column(browser) -> tuple[list[str], int, list[str]]:
    """Every drawn node, the last position, and the feature nodes of its most crowded layer."""
    drawn = _drawn(browser)
    last = max(int(node.split("@")[1]) for node in drawn if node.startswith("feature/"))
    crowded = sorted(n for n in drawn if n.startswith("feature/") and n.endswith(f"@{last}"))
    layer = max({n.split("/")[1] for n in crowded}, key=lambda at: sum(n.split("/")[1] == at for n in crowded))
    column = [n for n in crowded if n.split("/")[1] == layer]
    assert len(column) >= 20, "the demo's last position holds a crowded layer"
    return drawn, last, column


def _move_to_node(browser, node: str) -> ActionChains:
    """The mouse moved to the node's pixel position on the chart, as a reader moves it."""
    chart = browser.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", chart)
    time.sleep(0.5)
    dx, dy = browser.execute_script(NODE_OFFSET, node)
    return ActionChains(browser).move_to_element_with_offset(chart, round(dx), round(dy)).pause(0.3)


def _click_node(browser, node: str) -> None:
    """Move the mouse to the node's pixel position on the chart and click there, as a reader does."""
    _move_to_node(browser, node).click().perform()
    WebDriverWait(browser, 90).until(lambda d: _clicked(d) == node)


def test_a_click_on_the_crowded_column_selects_the_node_under_the_cursor_and_the_url_reopens_it(served):
    url, browser = served
    browser.get(url + GRAPH)
    wait_for_text(browser, "nodes and", timeout=300)
    drawn, last, column = _crowded_column(browser)
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


def _segments(traces: list[dict]) -> set[tuple[tuple[float, float], tuple[float, float]]]:
    """The edges drawn by line traces, as pairs of end points (each edge is x0, x1, None)."""
    return {((t["x"][i], t["y"][i]), (t["x"][i + 1], t["y"][i + 1])) for t in traces for i in range(0, len(t["x"]), 3)}


def test_hovering_a_node_lights_exactly_its_edges_dims_the_rest_and_leaving_restores_them(served):
    url, browser = served
    browser.get(url + GRAPH)  # cached on this server by the test above, or computed now
    wait_for_text(browser, "nodes and", timeout=300)
    _, _, column = _crowded_column(browser)
    before = browser.execute_script(TRACES)
    edges = [t for t in before if t["mode"] == "lines"]
    at = {node: (t["x"][i], t["y"][i]) for t in before if t["ids"] for i, node in enumerate(t["ids"])}
    node = max(column, key=lambda n: sum(at[n] in pair for pair in _segments(edges)))
    expected = {pair for pair in _segments(edges) if at[node] in pair}
    neighbours = {point for pair in expected for point in pair}
    assert len(expected) >= 2, "a node with edges in and out"

    _move_to_node(browser, node).perform()
    WebDriverWait(browser, 30).until(lambda d: any(t["meta"] for t in d.execute_script(TRACES)))
    hovered = browser.execute_script(TRACES)
    lit = [t for t in hovered if t["meta"]]
    assert _segments(lit) == expected, "exactly the hovered node's edges are drawn lit"
    assert all(t["opacity"] <= 0.2 for t in hovered if t["mode"] == "lines" and not t["meta"]), "the rest dimmed"
    for trace in (t for t in hovered if t["ids"]):
        for i, point in enumerate(zip(trace["x"], trace["y"])):
            assert trace["markers"][i] == (1 if point in neighbours else DIM_NODE), trace["ids"][i]
    assert _clicked(browser) is None, "hovering selects nothing"

    ActionChains(browser).move_to_element(browser.find_element(By.TAG_NAME, "h1")).perform()  # off the chart
    WebDriverWait(browser, 30).until(lambda d: not any(t["meta"] for t in d.execute_script(TRACES)))
    after = browser.execute_script(TRACES)
    assert [(t["mode"], t["opacity"], t["markers"]) for t in after] == [
        (t["mode"], t["opacity"], t["markers"]) for t in before
    ], "the figure as it was"
