"""The Lists page's "Make evidence pack" button: the shown list, on the open atlas, with the saved
graphs and steering runs the reader picks, made by the signed-in user and offered as a zip download.
The same :func:`~analysis.governance.evidence_build.make_pack` as ``saescope evidence``; torch-free."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

from analysis.errors import SAEscopeError
from analysis.governance.evidence_build import make_pack
from analysis.governance.evidence_data import EvidenceRequest
from analysis.governance.evidence_pdf import find_chromium
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md, option


def _experiments(page: PageContext, kind: str, label: str) -> list[str]:
    """A multiselect of the store's experiments of ``kind`` (newest first); the chosen ids."""
    frame = page.workspace.store.experiments(kind)
    titles = {
        str(i): f"{str(i)[:8]} · {title} · {reviewer}"
        for i, title, reviewer in zip(frame["id"], frame["title"], frame["reviewer"])
    }
    chosen = st.multiselect(label, list(titles), format_func=lambda i: option(titles[i]), key=f"evidence_{kind}")
    return list(chosen)


def evidence_button(page: PageContext, name: str) -> None:
    """Attachments, the button, and (once made) the pack's download for list ``name``."""
    made = f"evidence_pack_{name}"
    with st.expander("Evidence pack for a committee (report, data, checksums)"):
        graphs = _experiments(page, "graph", "Attach saved graphs")
        runs = _experiments(page, "steering", "Attach steering runs")
        chromium = find_chromium()
        if chromium is None:
            st.caption("Chromium is not installed here: the pack will hold the HTML report without its PDF.")
        if st.button("Make evidence pack", key=f"evidence_make_{name}"):
            request = EvidenceRequest(name, graphs=tuple(graphs), runs=tuple(runs), atlas=page.atlas.path)
            try:
                with st.spinner("Writing the evidence pack…"), tempfile.TemporaryDirectory() as folder:
                    out = Path(folder) / "pack.zip"
                    summary = make_pack(
                        request,
                        page.workspace.store,
                        out,
                        page.user.name,
                        pdf=chromium is not None,
                        atlas=page.workspace.atlas_cursor(page.atlas),
                    )
                    st.session_state[made] = (out.read_bytes(), summary.features, summary.files)
            except SAEscopeError as error:
                st.error(md(error))
        if made in st.session_state:
            content, features, files = st.session_state[made]
            slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[:60] or "list"
            st.download_button(
                "Download evidence pack (zip)",
                content,
                f"evidence-{slug}.zip",
                "application/zip",
                key=f"evidence_download_{name}",
            )
            st.caption(
                f"{features} features; {', '.join(files)} and SHA256SUMS. "
                "Check it with `saescope evidence verify` (see docs/GOVERNANCE.md)."
            )
