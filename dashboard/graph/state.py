"""What a reader adds to a graph: pinned nodes, supernodes (named groups of pinned nodes) and their
own node labels, with the subgraph they describe, and the same state as Neuronpedia's ``qParams``
(``pinnedIds``, ``supernodes`` as ``[name, *ids]``, ``clerps`` as ``[id, label]``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import networkx as nx

from analysis.errors import SAEscopeError


class GraphStateError(SAEscopeError, ValueError):
    """A pin, supernode or label that does not fit the graph, with a message saying why."""


@dataclass
class GraphState:
    pins: list[str] = field(default_factory=list)
    supernodes: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def pin(self, node: str) -> None:
        if node not in self.pins:
            self.pins.append(node)

    def unpin(self, node: str) -> None:
        """Unpinning a node also takes it out of its supernode (a supernode groups pinned nodes),
        and a supernode left with one node is no group."""
        self.pins = [pinned for pinned in self.pins if pinned != node]
        self._drop_from_groups([node])

    def _drop_from_groups(self, nodes: list[str], replaced: str | None = None) -> None:
        for name in list(self.supernodes):
            self.supernodes[name] = [member for member in self.supernodes[name] if member not in nodes]
            if len(self.supernodes[name]) < 2 or name == replaced:
                del self.supernodes[name]

    def group(self, name: str, members: list[str]) -> None:
        """Make (or replace) supernode ``name`` from pinned nodes; a node belongs to one supernode."""
        name = name.strip()
        if not name:
            raise GraphStateError("a supernode needs a name")
        if len(members) < 2:
            raise GraphStateError("a supernode groups at least two pinned nodes")
        unpinned = [member for member in members if member not in self.pins]
        if unpinned:
            raise GraphStateError(f"pin these nodes first: {', '.join(unpinned)}")
        self._drop_from_groups(members, replaced=name)
        self.supernodes[name] = list(members)

    def set_label(self, node: str, label: str) -> None:
        """The reader's label for a node; an empty label goes back to the automatic one."""
        if label.strip():
            self.labels[node] = label.strip()
        else:
            self.labels.pop(node, None)

    def to_dict(self) -> dict:
        return {
            "pins": list(self.pins),
            "supernodes": {k: list(v) for k, v in self.supernodes.items()},
            "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, data: dict) -> GraphState:
        return cls(
            pins=[str(p) for p in data.get("pins", [])],
            supernodes={str(k): [str(m) for m in v] for k, v in data.get("supernodes", {}).items()},
            labels={str(k): str(v) for k, v in data.get("labels", {}).items()},
        )

    def to_qparams(self, rename: dict[str, str] | None = None) -> dict:
        """Neuronpedia's ``qParams`` for this state, node ids renamed through ``rename`` if given."""
        name: Callable[[str], str] = (lambda node: rename.get(node, node)) if rename else (lambda node: node)
        return {
            "pinnedIds": ",".join(name(p) for p in self.pins),
            "supernodes": [[label, *(name(m) for m in members)] for label, members in self.supernodes.items()],
            "clerps": [[name(node), label] for node, label in self.labels.items()],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        }

    @classmethod
    def from_qparams(cls, qparams: dict) -> GraphState:
        """The state in Neuronpedia's ``qParams`` (``pinnedIds`` may be a comma-joined string or a list)."""
        pinned = qparams.get("pinnedIds") or []
        pins = [p for p in (pinned.split(",") if isinstance(pinned, str) else pinned) if p]
        supernodes = {
            str(group[0]): [str(m) for m in group[1:]] for group in qparams.get("supernodes") or [] if len(group) >= 3
        }
        labels = {str(node): str(label) for node, label in qparams.get("clerps") or []}
        return cls(pins=[str(p) for p in pins], supernodes=supernodes, labels=labels)

    def restricted_to(self, graph: nx.DiGraph) -> GraphState:
        """This state without the nodes ``graph`` does not have (e.g. after a higher threshold)."""
        return GraphState(
            pins=[p for p in self.pins if p in graph],
            supernodes={
                k: [m for m in v if m in graph] for k, v in self.supernodes.items() if sum(m in graph for m in v) >= 2
            },
            labels={k: v for k, v in self.labels.items() if k in graph},
        )


def from_url(params: Mapping[str, str | list[str]]) -> GraphState:
    """The state a Graph page URL holds, in Neuronpedia's ``qParams`` names (``pinnedIds`` comma-joined,
    ``supernodes`` and ``clerps`` as JSON). A malformed part is dropped, not an error: a link pasted
    from elsewhere still opens its graph. Supernodes are rebuilt through ``group`` so their members
    are pinned and belong to one supernode each."""

    def first(key: str) -> str:
        value = params.get(key)
        return (value if isinstance(value, str) else (value or [""])[0]) or ""

    def parsed(key: str) -> list:
        try:
            value = json.loads(first(key) or "[]")
        except json.JSONDecodeError:
            return []
        return [item for item in value if isinstance(item, list)] if isinstance(value, list) else []

    state = GraphState()
    for node in first("pinnedIds").split(","):
        if node:
            state.pin(node)
    for group in parsed("supernodes"):
        for member in group[1:]:
            state.pin(str(member))
        try:
            state.group(str(group[0]), [str(m) for m in group[1:]])
        except (GraphStateError, IndexError):
            continue
    for pair in parsed("clerps"):
        if len(pair) == 2:
            state.set_label(str(pair[0]), str(pair[1]))
    return state


def state_params(state: GraphState) -> dict[str, str]:
    """``state`` as URL query entries (the inverse of ``from_url``; empty parts left out)."""
    qparams = state.to_qparams()
    entries = {
        "pinnedIds": qparams["pinnedIds"],
        "supernodes": json.dumps(qparams["supernodes"], ensure_ascii=False) if state.supernodes else "",
        "clerps": json.dumps(qparams["clerps"], ensure_ascii=False) if state.labels else "",
    }
    return {key: value for key, value in entries.items() if value}


def supernode_id(name: str) -> str:
    return f"supernode/{name}"


def subgraph(graph: nx.DiGraph, state: GraphState) -> nx.DiGraph:
    """The pinned nodes and the logits, each supernode drawn as one node (``supernode/NAME``), with
    the edges between them; a supernode's edge to or from another node is the sum of its members'
    edges to or from that node, as circuit-tracer's and Neuronpedia's subgraph views draw them."""
    members = {member: name for name, group in state.supernodes.items() for member in group}
    shown = nx.DiGraph(**graph.graph)
    logits = [node for node, data in graph.nodes(data=True) if data["kind"] == "logit"]
    for node in [*state.pins, *logits]:
        if node not in graph or node in members:
            continue
        shown.add_node(node, **graph.nodes[node])
    for name, group in state.supernodes.items():
        present = [graph.nodes[m] for m in group if m in graph]
        if not present:
            continue
        shown.add_node(
            supernode_id(name),
            kind="supernode",
            label=name,
            members=list(group),
            layer=sum(d["layer"] for d in present) / len(present),
            position=max(d["position"] for d in present),
        )

    def shown_as(node: str) -> str:
        return supernode_id(members[node]) if node in members else node

    for source, target, data in graph.edges(data=True):
        a, b = shown_as(source), shown_as(target)
        if a == b or a not in shown or b not in shown:
            continue
        previous = shown.edges[a, b]["weight"] if shown.has_edge(a, b) else 0.0
        shown.add_edge(a, b, weight=previous + data["weight"])
    return shown
