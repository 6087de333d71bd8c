"""A watchlist run's record as CI systems show it: JUnit XML (one test case per check; GitHub, GitLab
and Jenkins all read it) and a markdown summary (for ``$GITHUB_STEP_SUMMARY`` or a pull-request comment).

XML is written with the standard library's ElementTree, which escapes every text and attribute; in
the markdown, text from the watchlist (ids, names) is escaped so it shows as typed, never as markup.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~#])")


def _md(text: object) -> str:
    """``text`` as literal markdown: markup characters escaped, line breaks as spaces."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def junit_xml(record: dict) -> bytes:
    """One ``testsuite`` named after the watchlist; each check a ``testcase`` (class: the feature),
    failed checks with a ``failure`` and skipped ones with ``skipped``; the numbers in system-out."""
    checks = record["checks"]
    suite = ET.Element(
        "testsuite",
        name=f"watchlist {record['watchlist']['name']}",
        tests=str(len(checks)),
        failures=str(record["counts"]["failed"]),
        errors="0",
        skipped=str(record["counts"]["skipped"]),
        time=f"{record['seconds']:.2f}",
        timestamp=record["started_at"],
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", record["run_id"]),
        ("watchlist_sha256", record["watchlist"]["sha256"]),
        ("model", record["model"]["spec"]),
        ("model_hash", record["model"]["content_hash"]),
        ("baseline", (record["baseline"] or {}).get("spec", "")),
        ("baseline_hash", (record["baseline"] or {}).get("content_hash", "")),
    ):
        ET.SubElement(properties, "property", name=name, value=value)
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname=f"watchlist.{check['feature']}", name=check["id"])
        if check["status"] == "failed":
            ET.SubElement(case, "failure", message=check["summary"], type=check["expect"]).text = check["summary"]
        elif check["status"] == "skipped":
            ET.SubElement(case, "skipped", message=check["summary"])
        ET.SubElement(case, "system-out").text = check["summary"]
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def markdown_summary(record: dict) -> str:
    """A heading with the verdict, a table of the checks, and what ran (hashes, run id)."""
    counts = record["counts"]
    verdict = "✅ all checks hold" if record["passed"] else f"❌ {counts['failed']} failed, {counts['skipped']} skipped"
    lines = [
        f"### Watchlist {_md(record['watchlist']['name'])}: {verdict}",
        "",
        "| check | feature | expectation | result | measured |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in record["checks"]:
        lines.append(
            f"| {_md(check['id'])} | {_md(check['feature'])} | {check['expect']} | {check['status']} "
            f"| {_md(check['summary'])} |"
        )
    features = ", ".join(
        f"{_md(f['feature'])} = {_md(f['sae'])}:{f['latent']}"
        + (f" (cosine {f['cosine']:.3f})" if f["how"] == "cosine" else "")
        for f in record["features"]
    )
    baseline = record["baseline"]
    lines += [
        "",
        f"Features: {features}",
        "",
        f"Model `{record['model']['content_hash'][:16]}` ({_md(record['model']['spec'])})"
        + (f", baseline `{baseline['content_hash'][:16]}` ({_md(baseline['spec'])})" if baseline else "")
        + f"; watchlist sha256 `{record['watchlist']['sha256'][:16]}`; run `{record['run_id']}`, {record['seconds']:.1f} s.",
        "",
    ]
    return "\n".join(lines)
