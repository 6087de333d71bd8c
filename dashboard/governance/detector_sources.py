"""Where the Detectors page gets labelled texts: an uploaded JSONL file (checked as the CLI checks
it), or two feature lists, whose features' atlas examples are the positives and the negatives."""

from __future__ import annotations

from collections.abc import Callable

from analysis.governance.detector_files import DetectorError, LabelledText, parse_labelled
from dashboard.shell.workspace import Atlas, Workspace

CONTEXT_BEFORE, CONTEXT_AFTER = 40, 8  # tokens of an example's window kept around its position


def from_upload(data: bytes, name: str) -> list[LabelledText]:
    """The uploaded file's rows; DetectorError (one line, with the line number) when malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DetectorError(f"{name} is not UTF-8 text") from None
    return parse_labelled(text.splitlines(), name)


def _example_windows(workspace: Workspace, atlas: Atlas, list_name: str) -> list[tuple[int, int]]:
    """(window, position) of every atlas example of the list's features that are in this atlas."""
    items = workspace.store.list_items(list_name)
    by_hash = dict(zip(atlas.saes["content_hash"], atlas.saes["sae"]))
    keys = [(int(by_hash[h]), int(latent)) for h, latent in zip(items["sae_hash"], items["latent"]) if h in by_hash]
    if not keys:
        return []
    rows = workspace.cursor().execute(
        f"""SELECT DISTINCT e.window_id, e.position FROM {atlas.alias}.examples AS e
            JOIN (SELECT unnest(?::INTEGER[]) AS sae, unnest(?::INTEGER[]) AS latent) AS k
              ON e.sae = k.sae AND e.latent = k.latent ORDER BY 1, 2""",
        [[sae for sae, _ in keys], [latent for _, latent in keys]],
    )
    return [(int(w), int(p)) for w, p in rows.fetchall()]


def from_lists(
    workspace: Workspace, atlas: Atlas, positive: str, negative: str, decode: Callable[[list[int]], str]
) -> list[LabelledText]:
    """Label 1: the example texts of ``positive``'s features; label 0: ``negative``'s. An example
    (window and position) both lists share is dropped from both: it says nothing about either."""
    pos, neg = set(_example_windows(workspace, atlas, positive)), set(_example_windows(workspace, atlas, negative))
    shared = pos & neg
    chosen = {key: 1 for key in pos - shared} | {key: 0 for key in neg - shared}
    if not chosen:
        return []
    windows = dict(
        workspace.cursor()
        .execute(
            f"SELECT window_id, tokens FROM {atlas.alias}.windows WHERE window_id IN "
            f"({', '.join('?' for _ in {w for w, _ in chosen})})",
            sorted({w for w, _ in chosen}),
        )
        .fetchall()
    )
    rows = []
    for (window, position), label in sorted(chosen.items()):
        tokens = list(windows[window])
        text = decode(tokens[max(0, position - CONTEXT_BEFORE) : position + CONTEXT_AFTER + 1])
        if text.strip():
            rows.append(LabelledText(text, label))
    return rows
