"""The evidence pack's report: one self-contained HTML page (inline CSS and SVG, nothing fetched) that a
committee reads top to bottom: what was examined, by whom, what was found, what was tested by
intervention, and how the pack is checked. Headless Chromium prints the same page to PDF.

Every text that came from a user, an atlas or an attached file is shown as plain text: through
``visible`` (invisible characters shown) and ``html.escape``, never as markup.
"""

from __future__ import annotations

import json
from collections import Counter
from html import escape

from analysis.governance import evidence_svg
from dashboard.browse.token_html import highlighted_tokens, window_slice
from dashboard.shell.plain_text import visible

STATUS_COLOURS = {
    "interpretable": "#059669",
    "polysemantic": "#d97706",
    "uninterpretable": "#6b7280",
    "dead": "#111827",
    "unreviewed": "#9ca3af",
}
CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: Helvetica, Arial, sans-serif; color: #1f2937; max-width: 900px; margin: 2rem auto; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #e5e7eb; padding-bottom: 0.2rem; margin-top: 2rem; }
h3 { margin: 0 0 0.3rem 0; } .muted { color: #6b7280; font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.82rem; margin: 0.4rem 0 0.8rem 0; }
th, td { border: 1px solid #e5e7eb; padding: 3px 6px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #f3f4f6; } td:first-child { white-space: nowrap; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.card { border: 1px solid #e5e7eb; border-radius: 6px; padding: 0.8rem 1rem; margin: 1rem 0; break-inside: avoid-page; }
.badge { display: inline-block; color: #fff; border-radius: 9px; padding: 0 8px; font-size: 0.78rem; }
.charts { display: flex; gap: 1rem; flex-wrap: wrap; } .charts figure { margin: 0; }
figcaption { font-size: 0.75rem; color: #6b7280; } .pass { color: #059669; font-weight: 600; } .fail { color: #dc2626; font-weight: 600; }
.summary { display: flex; gap: 1.5rem; flex-wrap: wrap; background: #f9fafb; padding: 0.6rem 1rem; border-radius: 6px; }
.summary div { font-size: 0.85rem; } .summary b { display: block; font-size: 1.3rem; }
pre, code { font-family: ui-monospace, monospace; font-size: 0.8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
details summary { cursor: pointer; }
"""


def _t(value: object, limit: int | None = None) -> str:
    """Untrusted text as HTML text: invisible characters shown, markup escaped, optionally shortened."""
    shown = visible("" if value is None else str(value), spaces=False)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return escape(shown)


def _num(value: object, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return _t(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return _t(value)


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of scalars as a table (other values as compact JSON), every cell plain text."""
    if not rows:
        return '<p class="muted">none</p>'
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_t(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{_num(value)}</td>'
    if isinstance(value, (dict, list)):
        return f"<td><code>{_t(json.dumps(value, ensure_ascii=False), 300)}</code></td>"
    return f"<td>{_t(value)}</td>"


def _badge(status: str) -> str:
    return f'<span class="badge" style="background:{STATUS_COLOURS.get(status, "#6b7280")}">{_t(status)}</span>'


def _examined(data: dict) -> str:
    atlas, model, corpus = data["atlas"], data["atlas"].get("model") or {}, data["atlas"].get("corpus") or {}
    saes = [
        {
            "SAE": s["name"],
            "hook": s["hook_name"] + (f" → {s['hook_name_out']}" if s.get("hook_name_out") else ""),
            "architecture": s["architecture"],
            "latents": s["d_sae"],
            "content hash (sha256)": s["content_hash"],
        }
        for s in atlas["saes"]
    ]
    return (
        "<h2>1. What was examined</h2>"
        + _table(
            [
                {
                    "": "model",
                    "value": f"{model.get('spec')} ({model.get('architecture')})",
                    "content hash (sha256)": model.get("content_hash"),
                },
                {
                    "": "corpus",
                    "value": f"{corpus.get('spec')}: {corpus.get('documents')} documents",
                    "content hash (sha256)": corpus.get("content_hash"),
                },
                {
                    "": "atlas",
                    "value": f"{atlas['file']}: {atlas.get('tokens')} tokens in windows of {atlas.get('context')}, finished {atlas.get('finished')}",
                    "content hash (sha256)": "see manifest.json",
                },
            ]
        )
        + "<p>The SAEs of the listed features:</p>"
        + _table(saes)
    )


def _who(data: dict) -> str:
    the_list = data["list"]
    return (
        "<h2>2. By whom</h2>"
        f"<p>The list <b>{_t(the_list['name'])}</b> was created by {_t(the_list['created_by'])} on "
        f"{_t(the_list['created_at'])}: <i>{_t(the_list['description']) or 'no description'}</i>.</p>"
        "<p>Everyone who changed one of its features (annotations and list changes, from the audit log):</p>"
        + _table(data["reviewers"], ["reviewer", "changes", "first", "last"])
        + f'<p class="muted">This pack was generated by {_t(data["generated_by"])} at {_t(data["generated_at"])}.</p>'
    )


def _examples_html(feature: dict) -> str:
    scale = (feature["statistics"] or {}).get("max_act") or 1.0
    lines = []
    for example in feature["examples"]:
        centre = example["max_position"]
        shown = window_slice(len(example["tokens"]), centre, 16)
        line = highlighted_tokens(example["tokens"], example["activations"], centre, scale, shown)
        lines.append(
            f'<div style="margin:0 0 0.5rem 0"><div class="muted">{example["value"]:.3f} · '
            f"{_t(example['domain'])}: {_t(example['source'], 80)} · window {example['window_id']}</div>{line}</div>"
        )
    return "".join(lines) or '<p class="muted">no examples: the feature never fired on the atlas</p>'


def _feature_card(feature: dict, sae_info: dict[str, dict]) -> str:
    note, stats = feature["annotation"], feature["statistics"]
    label = note["label"] or (stats or {}).get("auto_label") or "(no label)"
    source = "reviewer's label" if note["label"] else "automatic label"
    head = (
        f'<div class="card"><h3>{_t(feature["sae_name"])} #{feature["latent"]}: {_t(label)}</h3>'
        f'<div>{_badge(note["status"])} <span class="muted">{source}'
        + (f"; confidence {_t(note['confidence'])}" if note["confidence"] else "")
        + (f"; tags {_t(', '.join(note['tags']))}" if note["tags"] else "")
        + (f"; last reviewed by {_t(note['reviewer'])}" if note["reviewer"] else "")
        + "</span></div>"
    )
    notes = f"<p><b>Reviewer notes:</b> {_t(note['notes'])}</p>" if note["notes"] else ""
    list_note = (
        f"<p><b>Why on the list</b> ({_t(feature['added_by'])}): {_t(feature['list_note'])}</p>"
        if feature["list_note"]
        else ""
    )
    if stats is None:
        body = (
            f'<p class="muted">SAE {_t(feature["sae_hash"][:12])}… is not in this atlas: no statistics or examples.</p>'
        )
    else:
        sae = sae_info[feature["sae_hash"]]
        body = (
            f'<p class="muted">fires on {stats["fire_count"]} tokens (density {_num(stats["density"], 3)}), '
            f"max activation {_num(stats['max_act'])}, mean when firing {_num(stats['mean_act'])}; "
            f"automatic label: {_t(stats['auto_label']) or 'none'}</p>"
            '<div class="charts"><figure>'
            + (
                evidence_svg.activation_histogram(stats["hist"], stats["range_exp"], stats["max_act"])
                if stats["fire_count"]
                else ""
            )
            + "<figcaption>How strongly it fires, over the firing tokens</figcaption></figure><figure>"
            + evidence_svg.density_position(sae["density_log10_edges"], sae["density_counts"], stats["density"])
            + f"<figcaption>Its density (red) among the latents of {_t(sae['name'])}</figcaption></figure></div>"
            + f"<p><b>Top examples</b> (token colour = activation, the max outlined):</p>{_examples_html(feature)}"
        )
    audit = (
        f"<details open><summary>Audit trail: {len(feature['audit'])} changes</summary>"
        + _table(feature["audit"], ["changed_at", "reviewer", "action", "list_name", "field", "old_value", "new_value"])
        + "</details>"
    )
    return head + list_note + notes + body + audit + "</div>"


def _found(data: dict) -> str:
    features = data["features"]
    sae_info = {s["content_hash"]: s for s in data["atlas"]["saes"]}
    counts = Counter(f["annotation"]["status"] for f in features)
    overview = _table(
        [
            {
                "feature": f"{f['sae_name']} #{f['latent']}",
                "status": f["annotation"]["status"],
                "label": f["annotation"]["label"] or (f["statistics"] or {}).get("auto_label", ""),
                "reviewer": f["annotation"]["reviewer"],
                "density": (f["statistics"] or {}).get("density"),
            }
            for f in features
        ]
    )
    return (
        "<h2>3. What was found</h2>"
        f"<p>{len(features)} features: "
        + ", ".join(f"{n} {_t(s)}" for s, n in counts.most_common())
        + ".</p>"
        + overview
        + "".join(_feature_card(f, sae_info) for f in features)
    )


def _steering_run(run: dict) -> str:
    record = run["record"]
    targets = ", ".join(f"{t.get('sae')}:{t.get('latent')}:{t.get('coefficient')}" for t in record.get("targets", []))
    divergence = record.get("divergence") or {}
    shift = _table(
        [
            {"token": repr(n.get("text")), "p default": n.get("p_default"), "p steered": n.get("p_steered")}
            for n in divergence.get("next_tokens", [])
        ]
    )
    return (
        f'<div class="card"><h3>Run {_t(run["id"][:8])}: {_t(run["title"], 80)}</h3>'
        f'<p class="muted">by {_t(run["reviewer"])} at {_t(run["created_at"])}; method {_t(record.get("method"))}; '
        f"features {_t(targets)}; settings {_t(json.dumps(record.get('settings', {})))}</p>"
        f"<p><b>Prompt:</b> {_t(record.get('prompt'))}</p>"
        f"<p><b>Default:</b> {_t((record.get('default') or {}).get('text'))}</p>"
        f"<p><b>Steered:</b> {_t((record.get('steered') or {}).get('text'))}</p>"
        + (
            f"<p>First difference at generated token {divergence.get('index')}; next-token probabilities there:</p>{shift}"
            if divergence
            else "<p>The completions are identical.</p>"
        )
        + "</div>"
    )


def _graph(run: dict, highlight: set[tuple[str, int]]) -> str:
    graph = (run["record"] or {}).get("graph") or {}
    info = graph.get("graph", {})
    scores = ", ".join(
        f"{name.replace('_', ' ')} {info[name]:.3f}"
        for name in ("replacement_score", "completeness_score", "pruned_replacement_score")
        if isinstance(info.get(name), (int, float))
    )
    return (
        f'<div class="card"><h3>Graph {_t(run["id"][:8])}: {_t(run["title"], 80)}</h3>'
        f'<p class="muted">by {_t(run["reviewer"])} at {_t(run["created_at"])}; prompt {_t(info.get("prompt"))}; '
        f"{len(graph.get('nodes', []))} nodes, {len(graph.get('links', []))} edges; {scores}</p>"
        "<figure>"
        + evidence_svg.attribution_graph(graph, highlight)
        + "<figcaption>Rows are layers (embeddings at the bottom, logits on top), columns token positions; "
        "blue edges excite, red inhibit; features on this list are ringed in red.</figcaption></figure></div>"
    )


def _tested(data: dict) -> str:
    highlight = {(f["sae_name"], f["latent"]) for f in data["features"]}
    runs, graphs = data["steering_runs"], data["graphs"]
    if not runs and not graphs:
        return (
            "<h2>4. What was tested by intervention</h2><p class='muted'>No steering runs or graphs were attached.</p>"
        )
    return (
        "<h2>4. What was tested by intervention</h2>"
        + (
            f"<p>Steering runs ({len(runs)}): the same prompt and seed, with and without the features turned.</p>"
            if runs
            else ""
        )
        + "".join(_steering_run(run) for run in runs)
        + (
            f"<p>Attribution graphs ({len(graphs)}): how the model reached its next token, through transcoder features.</p>"
            if graphs
            else ""
        )
        + "".join(_graph(run, highlight) for run in graphs)
    )


def _metric_rows(metrics: dict) -> list[dict]:
    """One row per method (the detector, then its baselines) from ``detector train``'s metrics.json."""
    descriptions = metrics.get("method_descriptions", {})
    return [
        {"method": name, "what it is": descriptions.get(name, "")}
        | {k: v for k, v in values.items() if not isinstance(v, (dict, list))}
        for name, values in metrics.get("methods", {}).items()
        if isinstance(values, dict)
    ]


def _ms(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else _t(value)


def _detector(detector: dict | None) -> str:
    if detector is None:
        return ""
    spec, metrics = detector["detector"], detector["metrics"]
    described = {
        "SAE": spec.get("sae", {}).get("name"),
        "hook": spec.get("hook"),
        "pool": spec.get("pool"),
        "latents read": len(spec.get("features", [])),
        "threshold": spec.get("threshold"),
        "trained on (rows)": spec.get("training", {}).get("rows"),
        "model sha256": str(spec.get("model", {}).get("content_hash", ""))[:16] + "…",
    }
    split = metrics.get("split") or {}
    cost = metrics.get("cost") or {}
    strongest = sorted(spec.get("features", []), key=lambda f: -abs(f.get("weight", 0)))[:10]
    return (
        "<h2>5. Detector</h2>"
        f'<p class="muted">from {_t(detector["folder"])}</p>'
        + _table([described])
        + f"<p>Held-out metrics on {_t(split.get('test', '?'))} texts ({_t(split.get('test_positives', '?'))} "
        "positive), the detector beside its baselines on the same split:</p>"
        + _table(_metric_rows(metrics))
        + (
            f"<p>Cost: {_ms(cost.get('detector_ms_per_1000_texts'))} ms per 1,000 texts for the detector against "
            f"{_ms(cost.get('full_forward_ms_per_1000_texts'))} ms for a full forward of the model "
            f"({_num(cost.get('full_over_detector'))}× cheaper; {_t(cost.get('device'))}, "
            f"load average {_num(cost.get('load_average_1min'))}).</p>"
            if cost
            else ""
        )
        + "<p>Its strongest latents:</p>"
        + _table([{k: f.get(k) for k in ("latent", "weight", "label") if k in f} for f in strongest])
    )


def _passed(value: object) -> str:
    if value is True or value == "passed":
        return '<span class="pass">pass</span>'
    if value is False or value == "failed":
        return '<span class="fail">FAIL</span>'
    return _t(value)


def _watch(watch: dict | None) -> str:
    """A ``watch run`` record: what ran on which weights, and each check's outcome and numbers."""
    if watch is None:
        return ""
    model, baseline = watch.get("model") or {}, watch.get("baseline") or {}
    listed = watch.get("watchlist") or {}
    facts = [
        {"field": "watchlist", "value": f"{listed.get('name', '')} ({str(listed.get('sha256', ''))[:16]}…)"},
        {"field": "model", "value": f"{model.get('spec', '')} ({str(model.get('content_hash', ''))[:16]}…)"},
        {
            "field": "run",
            "value": f"{watch.get('run_id', '')} by {watch.get('user', '')} at {watch.get('started_at', '')}",
        },
    ]
    if baseline:
        facts.append(
            {
                "field": "baseline",
                "value": f"{baseline.get('spec', '')} ({str(baseline.get('content_hash', ''))[:16]}…)",
            }
        )
    checks = "".join(
        f"<tr><td>{_t(c.get('id'))}</td><td>{_t(c.get('feature'))}</td><td>{_t(c.get('expect'))}</td>"
        f"<td>{_passed(c.get('status'))}</td><td>{_t(c.get('summary'))}</td></tr>"
        for c in watch.get("checks", [])
        if isinstance(c, dict)
    )
    return (
        "<h2>6. Watchlist run</h2>"
        + f"<p>Outcome: {_passed(watch.get('passed'))}</p>"
        + _table(facts)
        + "<table><tr><th>check</th><th>feature</th><th>expects</th><th>result</th><th>measured</th></tr>"
        + checks
        + "</table>"
    )


def report_html(data: dict, manifest: dict) -> str:
    """The whole report for ``evidence.json``'s data and the pack's manifest."""
    the_list = data["list"]
    summary = (
        '<div class="summary">'
        f"<div><b>{len(data['features'])}</b>features</div>"
        f"<div><b>{len(data['reviewers'])}</b>reviewers</div>"
        f"<div><b>{len(data['steering_runs'])}</b>steering runs</div>"
        f"<div><b>{len(data['graphs'])}</b>graphs</div>"
        f"<div><b>{'yes' if data['detector'] else 'no'}</b>detector</div>"
        f"<div><b>{'yes' if data['watch'] else 'no'}</b>watchlist run</div></div>"
    )
    integrity = (
        "<h2>Integrity</h2><p>This report is one file of an evidence pack (a zip) that also holds the data as JSON "
        "(<code>evidence.json</code>), <code>manifest.json</code> (content hashes of the model, SAEs, corpus and "
        "atlas, library versions, who generated it and when) and <code>SHA256SUMS</code>"
        + (", signed with an Ed25519 key (<code>SHA256SUMS.sig</code>)" if manifest.get("signing_key") else "")
        + ". Check it with <code>saescope evidence verify PACK.zip"
        + (" --public-key KEY.pub.pem" if manifest.get("signing_key") else "")
        + "</code>.</p>"
        + _table([{"what": k, "sha256": v} for k, v in manifest.get("hashes", {}).items()])
        + _table([{"library": k, "version": v} for k, v in manifest.get("libraries", {}).items()])
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Evidence pack: {_t(the_list['name'])}</title><style>{CSS}</style></head><body>"
        f"<h1>Evidence pack: {_t(the_list['name'])}</h1>"
        f'<p class="muted">Generated by {_t(data["generated_by"])} at {_t(data["generated_at"])} with SAEscope '
        f"{_t(manifest.get('libraries', {}).get('saescope'))}</p>"
        + summary
        + _examined(data)
        + _who(data)
        + _found(data)
        + _tested(data)
        + _detector(data["detector"])
        + _watch(data["watch"])
        + integrity
        + "</body></html>"
    )
