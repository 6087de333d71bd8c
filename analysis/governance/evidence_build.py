"""One evidence pack from a request: check everything first (names, ids, files, the output path, the
signing key, Chromium), then collect the data, write the manifest, render and print the report, and
zip it all with its checksums. The CLI and the Lists page's button both call :func:`make_pack`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from analysis import preflight
from analysis.governance.evidence_data import FORMAT, EvidenceError, EvidenceRequest, Inputs, collect, resolve_inputs
from analysis.governance.evidence_pack import (
    LIBRARIES,
    fingerprint,
    load_private_key,
    sha256_file,
    write_pack,
)
from analysis.governance.evidence_pdf import MISSING, find_chromium, print_pdf
from analysis.governance.versions import library_versions


@dataclass(frozen=True)
class PackSummary:
    out: Path
    features: int
    files: tuple[str, ...]
    signed_by: str | None
    seconds: float


def _manifest(data: dict, inputs: Inputs, signing_key) -> dict:
    """Who made the pack, when, from which weights, atlas and attachments, with which libraries."""
    atlas = data["atlas"]
    model, corpus = atlas.get("model") or {}, atlas.get("corpus") or {}
    hashes = {"model": model.get("content_hash"), "corpus": corpus.get("content_hash")}
    hashes |= {f"SAE {sae['name']}": sae["content_hash"] for sae in atlas["saes"]}
    hashes["atlas file"] = sha256_file(inputs.request.atlas)
    attachments: dict = {"graphs": inputs.graph_ids, "steering_runs": inputs.run_ids}
    if inputs.watch_path is not None:
        attachments["watch_run"] = {"file": inputs.watch_path.name, "sha256": sha256_file(inputs.watch_path)}
    if inputs.detector is not None:
        folder = Path(inputs.detector["folder"])
        attachments["detector"] = {
            "folder": folder.name,
            **{name: sha256_file(folder / name) for name in ("detector.json", "metrics.json")},
        }
    return {
        "format": f"{FORMAT}-manifest",
        "generated_by": data["generated_by"],
        "generated_at": data["generated_at"],
        "list": data["list"]["name"],
        "model": model,
        "saes": [
            {"name": sae["name"], "spec": sae["spec"], "content_hash": sae["content_hash"]} for sae in atlas["saes"]
        ],
        "corpus": {"spec": corpus.get("spec"), "content_hash": corpus.get("content_hash")},
        "atlas": {"file": atlas["file"], "sha256": hashes["atlas file"], "built_with": atlas.get("versions")},
        "hashes": hashes,
        "attachments": attachments,
        "libraries": library_versions(LIBRARIES),
        "signing_key": fingerprint(signing_key.public_key()) if signing_key is not None else None,
    }


def make_pack(
    request: EvidenceRequest,
    store,
    out: Path,
    generated_by: str,
    sign_key: Path | None = None,
    pdf: bool = True,
    overwrite: bool = False,
    atlas=None,
) -> PackSummary:
    """Write the pack for ``request`` to ``out``. Every check comes before the atlas is read. ``atlas``:
    a connection to ``request.atlas`` the caller holds open (the dashboard's workspace cursor)."""
    from analysis.governance.evidence_report import report_html

    started = time.perf_counter()
    out = Path(out).expanduser()
    preflight.output_file(out, overwrite=overwrite)
    signing_key = load_private_key(sign_key) if sign_key is not None else None
    chromium = find_chromium() if pdf else None
    if pdf and chromium is None:
        raise EvidenceError(MISSING)
    inputs = resolve_inputs(request, store, atlas_open=atlas is not None)
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    data = collect(inputs, store, generated_by, generated_at, atlas)
    manifest = _manifest(data, inputs, signing_key)
    html = report_html(data, manifest)
    files = {
        "report.html": html.encode(),
        "evidence.json": json.dumps(data, ensure_ascii=False, indent=1, allow_nan=False).encode(),
        "manifest.json": json.dumps(manifest, ensure_ascii=False, indent=1).encode(),
    }
    if chromium is not None:
        files["report.pdf"] = print_pdf(html, chromium)
    write_pack(out, files, signing_key)
    return PackSummary(
        out, len(data["features"]), tuple(files), manifest["signing_key"], round(time.perf_counter() - started, 2)
    )
