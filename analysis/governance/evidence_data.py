"""What an evidence pack says, as JSON: a feature list from the user store with each feature's atlas
statistics, top examples, reviewers' annotations and full audit trail, plus the attached saved graphs,
steering runs, detector metrics and watchlist run.

Two steps, so bad input costs nothing: :func:`resolve_inputs` checks every name, id and file a user
gave (the list, experiment ids, the watch run and detector files, the atlas) and reads only small
JSON; :func:`collect` then reads the atlas. Torch-free (the Lists page calls it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from analysis.errors import SAEscopeError
from analysis.governance.watch_run import runs_dir
from analysis.paths import DEMO_ATLAS

FORMAT = "saescope-evidence/1"
DETECTOR_FILES = ("detector.json", "metrics.json")
MIN_ID_PREFIX = 4  # the dashboard shows experiment ids' first 8 characters; 4 or more pick one out


class EvidenceError(SAEscopeError, ValueError):
    """Something given for an evidence pack that cannot be used; one line for the user."""


@dataclass(frozen=True)
class EvidenceRequest:
    """What to put in a pack, as the user named it."""

    list_name: str
    graphs: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    watch: str | None = None
    watch_runs_dir: Path | None = None
    detector: Path | None = None
    atlas: Path = DEMO_ATLAS
    examples: int = 5


@dataclass
class Inputs:
    """The request checked and resolved: full experiment ids and the small JSON files, read."""

    request: EvidenceRequest
    graph_ids: list[str]
    run_ids: list[str]
    watch: dict | None = None
    watch_path: Path | None = None
    detector: dict | None = None


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or EvidenceError naming ``what`` it should have been."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvidenceError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvidenceError(f"{what} {path} cannot be read as JSON: {error}") from None
    if not isinstance(data, dict):
        raise EvidenceError(f"{what} {path} is JSON but not an object")
    return data


def _experiment_id(store, kind: str, given: str) -> str:
    """The full id of the ``kind`` experiment whose id is ``given`` or starts with it (unique)."""
    ids = [str(i) for i in store.experiments(kind, limit=1_000_000)["id"]]
    if given in ids:
        return given
    matches = [i for i in ids if len(given) >= MIN_ID_PREFIX and i.startswith(given)]
    noun = "saved graph" if kind == "graph" else "steering run"
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise EvidenceError(f"{given!r} is the start of {len(matches)} {noun} ids; give more of it")
    raise EvidenceError(f"there is no {noun} with id {given!r} in {store.path}")


def _watch_run(request: EvidenceRequest) -> tuple[dict, Path]:
    """The watch run named ``request.watch``: a path to its JSON file, or RUN for RUN.json in the runs folder."""
    given = str(request.watch)
    as_path = Path(given).expanduser()
    path = (
        as_path
        if as_path.suffix == ".json" and as_path.is_file()
        else runs_dir(request.watch_runs_dir) / f"{given}.json"
    )
    if not path.is_file():
        raise EvidenceError(f"there is no watch run {given!r}: {path} does not exist")
    return read_json(path, "the watch run"), path


def _detector(folder: Path) -> dict:
    """A trained detector's ``detector.json`` and ``metrics.json``."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise EvidenceError(f"the detector folder {folder} does not exist")
    parts = {name.removesuffix(".json"): read_json(folder / name, "the detector file") for name in DETECTOR_FILES}
    return {"folder": str(folder), **parts}


def resolve_inputs(request: EvidenceRequest, store, atlas_open: bool = False) -> Inputs:
    """Check everything the request names (cheap: nothing but small files and the user store is read);
    ``atlas_open``: the caller holds the atlas open already (the dashboard), so it is not checked here."""
    from analysis.atlas.reader import open_atlas

    if not 0 <= request.examples <= 50:
        raise EvidenceError(f"examples per feature must be 0 to 50, not {request.examples}")
    store.list_items(request.list_name)  # UserDataError (one line) for a list that does not exist
    graph_ids = [_experiment_id(store, "graph", given) for given in request.graphs]
    run_ids = [_experiment_id(store, "steering", given) for given in request.runs]
    inputs = Inputs(request, list(dict.fromkeys(graph_ids)), list(dict.fromkeys(run_ids)))
    if request.watch is not None:
        inputs.watch, inputs.watch_path = _watch_run(request)
    if request.detector is not None:
        inputs.detector = _detector(request.detector)
    if not atlas_open:
        open_atlas(request.atlas).close()  # AtlasError (one line) for a missing, foreign or unfinished atlas
    return inputs


def _records(frame) -> list[dict]:
    """A user-store frame as plain JSON rows (times as ISO 8601), the way the Lists page exports it."""
    from dashboard.browse.exports import as_json

    return json.loads(as_json(frame))


def _examples(connection, sae: int, latent: int, limit: int) -> list[dict]:
    """The feature's top windows with their token texts and activations (exact, FLOAT), best first."""
    rows = connection.execute(
        """SELECT e.rank, e.window_id, e.position, e.value, d.domain, d.source, d.doc_id, w.tokens,
                  e.act_positions, example_acts(e.act_values, e.act_values_f16) AS acts
           FROM examples e JOIN windows w USING (window_id) JOIN documents d USING (document)
           WHERE e.sae = ? AND e.latent = ? AND e.kind = 'top' ORDER BY e.rank LIMIT ?""",
        [sae, latent, limit],
    ).fetchall()
    needed = sorted({token for row in rows for token in row[7]})
    texts = dict(
        connection.execute("SELECT token, text FROM tokens WHERE list_contains(?, token)", [needed]).fetchall()
    )
    examples = []
    for rank, window, position, value, domain, source, doc_id, tokens, positions, acts in rows:
        dense = [0.0] * len(tokens)
        for at, act in zip(positions, acts):
            dense[at] = round(float(act), 5)
        examples.append(
            {
                "rank": rank,
                "window_id": window,
                "max_position": position,
                "value": float(value),
                "domain": domain,
                "source": source,
                "doc_id": doc_id,
                "tokens": [texts[t] for t in tokens],
                "activations": dense,
            }
        )
    return examples


FEATURE_COLUMNS = "fire_count, density, max_act, mean_act, range_exp, hist, log_hist, label"


def _statistics(connection, sae: int, latent: int) -> dict | None:
    cursor = connection.execute(f"SELECT {FEATURE_COLUMNS} FROM features WHERE sae = ? AND latent = ?", [sae, latent])
    row = cursor.fetchone()
    if row is None:
        return None
    names = [column[0] for column in cursor.description or []]
    stats = dict(zip(names, row))
    stats["auto_label"] = stats.pop("label") or ""
    for key in ("density", "max_act", "mean_act"):
        stats[key] = None if stats[key] is None else float(stats[key])
    return stats


def _feature(connection, store, item: dict, saes: dict[str, dict], examples: int) -> dict:
    """One list item with its annotation, audit trail and (when the atlas has its SAE) statistics and examples."""
    sae = saes.get(item["sae_hash"])
    feature = {
        "sae_hash": item["sae_hash"],
        "sae_name": item["sae_name"],
        "latent": int(item["latent"]),
        "list_note": item["note"],
        "added_by": item["added_by"],
        "added_at": item["added_at"],
        "annotation": {key: item[key] for key in ("status", "label", "tags", "confidence", "notes", "reviewer")},
        "in_atlas": sae is not None,
        "statistics": None,
        "examples": [],
        "audit": list(reversed(_records(store.history(item["sae_hash"], int(item["latent"]))))),
    }
    if sae is not None:
        feature["statistics"] = _statistics(connection, sae["sae"], feature["latent"])
        feature["examples"] = _examples(connection, sae["sae"], feature["latent"], examples) if examples else []
    return feature


def collect(inputs: Inputs, store, generated_by: str, generated_at: str, atlas=None) -> dict:
    """The pack's ``evidence.json``: everything the report shows, and more (every activation, every audit
    row). ``atlas``: an open connection (or cursor) whose tables are the atlas's, used and left open;
    else ``inputs.request.atlas`` is opened and closed."""
    from analysis.atlas.reader import open_atlas, read_meta, sae_records

    request = inputs.request
    items = _records(store.list_frame(request.list_name))
    the_list = next(row for row in _records(store.lists()) if row["name"] == request.list_name)
    audit = _records(store.audit_frame())
    connection = atlas if atlas is not None else open_atlas(request.atlas)
    try:
        meta = read_meta(connection)
        saes = {
            record["content_hash"]: {
                key: record[key]
                for key in (
                    "sae",
                    "name",
                    "spec",
                    "hook_name",
                    "hook_name_out",
                    "architecture",
                    "d_sae",
                    "content_hash",
                )
            }
            | {"density_log10_edges": record["density_log10_edges"], "density_counts": record["density_counts"]}
            for record in sae_records(connection)
        }
        features = [_feature(connection, store, item, saes, request.examples) for item in items]
    finally:
        if atlas is None:
            connection.close()
    used = {f["sae_hash"] for f in features}
    return {
        "format": FORMAT,
        "generated_by": generated_by,
        "generated_at": generated_at,
        "list": {
            "name": the_list["name"],
            "description": the_list["description"],
            "created_by": the_list["created_by"],
            "created_at": the_list["created_at"],
            "audit": [row for row in audit if row["list_name"] == request.list_name and row["sae_hash"] is None],
        },
        "atlas": {
            "file": Path(request.atlas).name,
            "model": meta.get("model"),
            "corpus": meta.get("corpus"),
            "tokens": meta.get("tokens"),
            "context": meta.get("context"),
            "finished": meta.get("finished"),
            "versions": meta.get("versions"),
            "saes": [sae for content_hash, sae in saes.items() if content_hash in used],
        },
        "features": features,
        "reviewers": _reviewers(features),
        "graphs": [store.experiment(i) for i in inputs.graph_ids],
        "steering_runs": [store.experiment(i) for i in inputs.run_ids],
        "detector": inputs.detector,
        "watch": inputs.watch,
    }


def _reviewers(features: list[dict]) -> list[dict]:
    """Everyone who changed one of the features, with how many changes, first and last."""
    seen: dict[str, dict] = {}
    for feature in features:
        for row in feature["audit"]:
            person = seen.setdefault(
                row["reviewer"], {"reviewer": row["reviewer"], "changes": 0, "first": row["changed_at"]}
            )
            person["changes"] += 1
            person["first"] = min(person["first"], row["changed_at"])
            person["last"] = max(person.get("last", row["changed_at"]), row["changed_at"])
    return sorted(seen.values(), key=lambda person: (-person["changes"], person["reviewer"]))
