"""The Graph page's chart: the figure ``view.graph_figure`` builds, drawn in the browser by a
Streamlit v2 component so that hovering a node lights its edges and dims the rest (circuit-tracer's
and Neuronpedia's graph explorers do this), and a click returns the node's id to Python.

Why a component: ``st.plotly_chart`` reports selections but no hover, and only script on the page can
restyle a figure while the mouse moves. The plotly.js it runs is the one inside the installed plotly
package (nothing from the network), loaded by a second, data-free component: Streamlit's client
caches an element it has seen by hash, so the 4.8 MB of plotly.js travels once per session while the
figure's component, whose data change on every click, stays small."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline
from streamlit.components.v2 import component

_LOADER = """const SOURCE = %s;
export default function () {
  if (window.saescopePlotly) return;
  const previous = window.Plotly;  // Streamlit's own plotly charts keep theirs
  const script = document.createElement("script");
  script.textContent = SOURCE;
  document.head.appendChild(script);
  script.remove();
  window.saescopePlotly = window.Plotly;
  if (previous) window.Plotly = previous;
  window.dispatchEvent(new Event("saescope-plotly"));
}
"""

_plotly_js = component("saescope_plotly_js", js=_LOADER % json.dumps(plotly.offline.get_plotlyjs()))
# not style-isolated: plotly.js puts its hover and mode-bar styles in the document's head
_graph_chart = component(
    "saescope_graph_chart", js=(Path(__file__).parent / "chart.js").read_text(), isolate_styles=False
)


def graph_chart(figure: go.Figure, hover: dict, key: str, on_click: Callable[[], None]) -> None:
    """Draw ``figure`` with hover highlighting from ``hover`` (``view.hover_edges``); a click on a node
    calls ``on_click`` before the rerun, when ``st.session_state[key]["clicked"]`` is its id."""
    spec = figure.to_json()
    assert spec is not None, "to_json without a file returns the JSON"
    _plotly_js(key=f"{key}_plotly_js", height=0)
    _graph_chart(
        key=key,
        data={"figure": json.loads(spec), "hover": hover},
        on_clicked_change=on_click,
    )
