"""Watchlists: write a watchlist from a feature list (a saved list, or SAE:LATENT lines), run one
against the live model, and see the history of runs recorded by the dashboard and by
``saescope watch run`` (the same run records; docs/GOVERNANCE.md). Everything from files and users
is shown as plain text: the TOML in a code block, tables through plain_frame, messages through md."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.live.model_stack import import_model_stack

import_model_stack()  # before the imports below: one session at a time (see model_stack)

from analysis.errors import SAEscopeError  # noqa: E402
from analysis.governance.watch_build import build_watchlist, list_targets  # noqa: E402
from analysis.governance.watch_run import measure_and_record, read_runs, runs_dir  # noqa: E402
from analysis.governance.watchlist_file import load_watchlist  # noqa: E402
from analysis.live_model import LiveModel  # noqa: E402
from analysis.steering_target import SteeringTarget  # noqa: E402
from dashboard.live.service import require_live  # noqa: E402
from dashboard.shell.page import PageContext, open_page  # noqa: E402
from dashboard.shell.plain_text import md, option, plain_frame  # noqa: E402

MAX_TOML_CHARS = 2_000_000
TYPED = "(type SAE:LATENT lines)"


def _build_tab(page: PageContext, live: LiveModel) -> None:
    lists = page.workspace.store.lists()
    source = st.selectbox("Features from", [TYPED, *lists["name"]], format_func=option)
    if source == TYPED:
        typed = st.text_area("Features, one SAE:LATENT per line", placeholder="resid-L2:345", key="watch_features")
        try:
            targets = [SteeringTarget.parse(line.strip()) for line in typed.splitlines() if line.strip()]
        except SAEscopeError as error:
            st.error(md(error))
            return
    else:
        targets, missing = list_targets(page.workspace.store.list_items(source), live.sae_hashes)
        elsewhere = f"; {missing} more are on SAEs the live model has not loaded" if missing else ""
        st.caption(f"{len(targets)} features in the list{elsewhere}")
    texts = st.text_area("Texts the checks measure on, one per line", key="watch_texts")
    cols = st.columns(2)
    name = cols[0].text_input("Watchlist name", value="watchlist", max_chars=200)
    fraction = cols[1].number_input("Allowed rise of the mean activation (fraction of today's)", 0.0, 100.0, 0.5)
    if not st.button("Build watchlist", disabled=not targets):
        return
    lines = [line for line in texts.splitlines() if line.strip()]
    if not lines:
        st.error("Give at least one text for the checks to measure on.")
        return
    try:
        st.session_state["watch_toml"] = build_watchlist(live, targets, lines, name or "watchlist", fraction)
    except SAEscopeError as error:
        st.error(md(error))
        return
    st.success(f"Built a watchlist of {len(dict.fromkeys(targets))} features; it is in the Run tab.")
    st.code(st.session_state["watch_toml"], language="toml")
    st.download_button("Download watchlist.toml", st.session_state["watch_toml"], "watchlist.toml", "text/plain")


def _checks_frame(record: dict) -> pd.DataFrame:
    return plain_frame(
        pd.DataFrame(
            {
                "check": [c["id"] for c in record["checks"]],
                "feature": [c["feature"] for c in record["checks"]],
                "expectation": [c["expect"] for c in record["checks"]],
                "result": [c["status"] for c in record["checks"]],
                "measured": [c["summary"] for c in record["checks"]],
            }
        )
    )


def _run_tab(page: PageContext, live: LiveModel) -> None:
    uploaded = st.file_uploader("Watchlist file", type=["toml"])
    if uploaded is not None:
        st.session_state["watch_toml"] = uploaded.getvalue().decode("utf-8", errors="replace")
    toml = st.text_area("Watchlist (TOML, format = 1)", key="watch_toml", height=240, max_chars=MAX_TOML_CHARS)
    st.caption(
        "Checks that compare with a baseline model run here only when the watchlist records the baseline mean "
        "(as a built one does); `saescope watch run --baseline` compares two models."
    )
    if not st.button("Run against the loaded model", disabled=not toml.strip()):
        return
    folder = None if page.read_only else runs_dir()
    try:
        watchlist = load_watchlist("watchlist.toml", toml.encode("utf-8"))
        with st.spinner("Running the checks…"):
            record = measure_and_record(watchlist, live, live.loaded.spec, folder, user=f"{page.user.name} (dashboard)")
    except SAEscopeError as error:
        st.error(md(error))
        return
    verdict = "All checks hold." if record["passed"] else "Some checks do not hold."
    (st.success if record["passed"] else st.error)(verdict)
    st.dataframe(_checks_frame(record), hide_index=True, width="stretch")
    if record["run_id"]:
        st.caption(f"Recorded as run {md(record['run_id'])} in {md(folder)}")
    else:
        st.caption("Not recorded: browsing only.")


def _history_tab() -> None:
    folder = runs_dir()
    runs = read_runs(folder) if folder.is_dir() else []
    st.caption(f"Run records in {md(folder)} (set SAESCOPE_WATCH_RUNS to change it), newest first")
    if not runs:
        st.info("No watchlist runs yet.")
        return
    table = pd.DataFrame(
        {
            "run": [r["run_id"] for r in runs],
            "started": [r["started_at"] for r in runs],
            "watchlist": [r["watchlist"]["name"] for r in runs],
            "result": ["passed" if r["passed"] else "failed" for r in runs],
            "passed": [r["counts"]["passed"] for r in runs],
            "failed": [r["counts"]["failed"] for r in runs],
            "model hash": [r["model"]["content_hash"][:16] for r in runs],
            "baseline hash": [(r["baseline"] or {}).get("content_hash", "")[:16] for r in runs],
            "by": [r["user"] for r in runs],
        }
    )
    st.dataframe(plain_frame(table), hide_index=True, width="stretch")
    chosen = st.selectbox("Checks of run", [r["run_id"] for r in runs], format_func=option)
    record = next(r for r in runs if r["run_id"] == chosen)
    st.dataframe(_checks_frame(record), hide_index=True, width="stretch")


page = open_page("Watchlists")
live = require_live(page.atlas)
build, run, history = st.tabs(["Build", "Run", "History"])
with build:
    _build_tab(page, live)
with run:
    _run_tab(page, live)
with history:
    _history_tab()
