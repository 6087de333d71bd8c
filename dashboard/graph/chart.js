// The Graph page's chart (a Streamlit v2 component, see chart.py): draws the figure Python built with
// the plotly.js that the plotly_js component loaded; hovering a node lights its edges and dims the
// rest, leaving it restores the figure, and a click sends the node's id back to Python.

const HOVER = "saescope-hover-edges"; // the meta of the traces drawn for a hovered node
const HOVER_DELAY_MS = 60;

function plotlyReady() {
  if (window.saescopePlotly) return Promise.resolve(window.saescopePlotly);
  return new Promise((resolve) =>
    window.addEventListener("saescope-plotly", () => resolve(window.saescopePlotly), { once: true }),
  );
}

// Figure changes and hover changes run one after another, never interleaved.
function queued(div, step) {
  div.saescopeQueue = (div.saescopeQueue || Promise.resolve()).then(step).catch((error) => console.error(error));
  return div.saescopeQueue;
}

// Plotly's own redraw (of a restyle) unhovers and hovers again: the node under the mouse is read from
// the events, and the figure follows it a moment later, once per change, so a redraw starts no loop.
function follow(Plotly, div, node) {
  div.saescopeWant = node;
  clearTimeout(div.saescopeTimer);
  div.saescopeTimer = setTimeout(
    () =>
      queued(div, () => {
        const want = div.saescopeWant;
        if (want === div.saescopeShown) return undefined;
        div.saescopeShown = want;
        return restore(Plotly, div).then(() => want !== null && highlight(Plotly, div, want));
      }),
    HOVER_DELAY_MS,
  );
}

function highlight(Plotly, div, node) {
  const { hover } = div.saescope;
  const traces = div.data;
  const nodeTraces = traces.flatMap((t, i) => (t.customdata ? [i] : []));
  const edgeTraces = traces.flatMap((t, i) => (t.mode === "lines" && t.meta !== HOVER ? [i] : []));
  const at = new Map();
  for (const i of nodeTraces) traces[i].customdata.forEach((id, k) => at.set(id, [traces[i].x[k], traces[i].y[k]]));
  if (!at.has(node)) return Promise.resolve(); // a hover from the figure before this one
  const edges = (hover.touching[node] || []).map((k) => hover.edges[k]).filter(([s, t]) => at.has(s) && at.has(t));
  const near = new Set([node, ...edges.flatMap(([source, target]) => [source, target])]);
  const groups = new Map(); // one trace per line style
  for (const [source, target, line] of edges) {
    const style = JSON.stringify(line);
    if (!groups.has(style)) groups.set(style, { x: [], y: [], line });
    const group = groups.get(style);
    group.x.push(at.get(source)[0], at.get(target)[0], null);
    group.y.push(at.get(source)[1], at.get(target)[1], null);
  }
  div.saescopeSaved = {
    opacity: edgeTraces.map((i) => (traces[i].opacity === undefined ? 1 : traces[i].opacity)),
    markers: nodeTraces.map((i) => traces[i].marker.opacity),
  };
  const added = [...groups.values()].map(({ x, y, line }) => ({
    type: "scatter", mode: "lines", x, y, line, meta: HOVER, hoverinfo: "skip", showlegend: false,
  }));
  const first = nodeTraces.length ? Math.min(...nodeTraces) : traces.length; // under the nodes, over the edges
  return Plotly.restyle(div, { opacity: hover.dim_edges }, edgeTraces)
    .then(() =>
      Plotly.restyle(
        div,
        { "marker.opacity": nodeTraces.map((i) => traces[i].customdata.map((id) => (near.has(id) ? 1 : hover.dim_node))) },
        nodeTraces,
      ),
    )
    .then(() => added.length && Plotly.addTraces(div, added, added.map((_, j) => first + j)));
}

function restore(Plotly, div) {
  const saved = div.saescopeSaved;
  if (!saved) return Promise.resolve();
  div.saescopeSaved = null;
  const lit = div.data.flatMap((t, i) => (t.meta === HOVER ? [i] : []));
  return (lit.length ? Plotly.deleteTraces(div, lit) : Promise.resolve()).then(() => {
    const edgeTraces = div.data.flatMap((t, i) => (t.mode === "lines" ? [i] : []));
    const nodeTraces = div.data.flatMap((t, i) => (t.customdata ? [i] : []));
    return Plotly.restyle(div, { opacity: saved.opacity }, edgeTraces).then(() =>
      Plotly.restyle(div, { "marker.opacity": saved.markers }, nodeTraces),
    );
  });
}

function listen(Plotly, div) {
  div.on("plotly_hover", (event) => {
    const point = (event.points || []).find((p) => p.customdata !== undefined && p.data.meta !== HOVER);
    if (point) follow(Plotly, div, point.customdata);
  });
  div.on("plotly_unhover", () => follow(Plotly, div, null));
  div.on("plotly_click", (event) => {
    const point = (event.points || []).find((p) => p.customdata !== undefined);
    if (point) div.saescope.setTriggerValue("clicked", point.customdata);
  });
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let div = parentElement.querySelector(".saescope-graph");
  if (!div) {
    div = document.createElement("div");
    div.className = "saescope-graph";
    parentElement.appendChild(div);
  }
  div.style.height = `${data.figure.layout.height}px`;
  div.saescope = { hover: data.hover, setTriggerValue };
  plotlyReady().then((Plotly) =>
    queued(div, () => {
      div.saescopeSaved = null;
      div.saescopeShown = null;
      const { data: traces, layout } = data.figure;
      return Plotly.react(div, traces, layout, { responsive: true, displaylogo: false }).then(() => {
        if (!div.saescopeListening) {
          listen(Plotly, div);
          div.saescopeListening = true;
        }
      });
    }),
  );
  return () => window.saescopePlotly && window.saescopePlotly.purge(div);
}
