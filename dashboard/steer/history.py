"""The Steer page's history: every recorded run, newest first; open one to read it, download its
JSON record, or load its features, prompt and settings back into the page and run it again."""

from __future__ import annotations

import json

import streamlit as st

from analysis.divergence import generated_token
from analysis.steering_target import SteeringTarget
from dashboard.live.experiment_table import chosen_experiment
from dashboard.shell.page import PageContext
from dashboard.shell.plain_text import md
from dashboard.steer.targets import set_coefficients
from dashboard.steer.view import completion_html, prompt_shown
from dashboard.userdata import UserDataError


def load_record_into_page(record: dict) -> None:
    """Put a recorded run's features, prompt, method and settings into the Steer page's widgets and
    ask it to generate (a button callback: widget state may only be set before widgets are drawn)."""
    targets = [SteeringTarget(t["sae"], int(t["latent"]), float(t["coefficient"])) for t in record["targets"]]
    st.session_state["steer_targets"] = targets
    set_coefficients(targets)
    st.session_state["steer_prompt"] = record["prompt"]
    st.session_state["steer_method"] = record["method"]
    for name, value in record["settings"].items():
        st.session_state[f"steer_{name}"] = value
    st.session_state["steer_run_now"] = True


def steering_history(page: PageContext, url_run: str | None = None) -> str | None:
    """The recorded runs; the selected one (or, with none selected, the one a link names) is shown
    and its id returned, so the page can put it in its URL."""
    st.subheader("History")
    chosen = chosen_experiment(
        page,
        "steering",
        "steer_history",
        {"title": "prompt", "id": "run"},
        "No recorded runs yet.",
        "Select a run to read it, download it or run it again.",
    )
    chosen = chosen or url_run
    if chosen is None:
        return None
    try:
        experiment = page.workspace.store.experiment(chosen)
    except UserDataError as error:
        st.error(md(error))
        return None
    if experiment["kind"] != "steering":
        st.error(md(f"run {chosen} is not a steering run"))
        return None
    record = experiment["record"]
    st.markdown(md(f"Run {chosen[:8]} · {record['prompt']}", 200))
    features = ", ".join(f"{t['sae']} #{t['latent']} × {t['coefficient']:g}" for t in record["targets"])
    st.markdown(
        md(
            f"{record['method']}: {features} · seed {record['settings']['seed']} · "
            f"temperature {record['settings']['temperature']:g}",
            300,
        )
    )
    left, right = st.columns(2)
    divergence = record["divergence"]["index"] if record["divergence"] else None
    left.html(completion_html(prompt_shown(record), record["default"]["tokens"], divergence))
    right.html(completion_html(prompt_shown(record), record["steered"]["tokens"], divergence))
    if divergence is not None:
        st.caption(f"First difference at {generated_token(divergence)} (counting from 1).")
    buttons = st.columns([1, 1, 4])
    buttons[0].button("Run again", on_click=load_record_into_page, args=(record,), key="steer_rerun")
    buttons[1].download_button(
        "JSON",
        json.dumps(experiment, indent=2, ensure_ascii=False),
        file_name=f"steering-{experiment['id'][:8]}.json",
        mime="application/json",
    )
    return chosen
