"""Steer: turn latents up or down and watch the text change. Default and steered completions are
generated with the same seed, side by side as they grow; every run is recorded with its settings,
the model and SAE hashes and both outputs, and the history re-runs or exports any of them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from analysis.atlas.reader import features_by_label
from analysis.divergence import first_difference, generated_token
from analysis.generation_settings import MAX_FREQUENCY_PENALTY, MAX_NEW_TOKENS, GenerationSettings
from analysis.live_errors import LiveInputError
from analysis.steering_methods import DEFAULT_METHOD, METHODS
from analysis.steering_target import MAX_COEFFICIENT, SteeringTarget, default_coefficient
from dashboard.browse.filter_controls import url_params
from dashboard.live.service import require_live
from dashboard.shell.page import PageContext, open_page
from dashboard.shell.plain_text import md, option
from dashboard.shell.url_state import text
from dashboard.steer.history import steering_history
from dashboard.steer.targets import coefficient_key, latent_summary, scale_caption, set_coefficients
from dashboard.steer.view import completion_html, prompt_shown, shift_chart

if TYPE_CHECKING:  # torch-backed: imported below, once the page has shown the model's loading progress
    from analysis.live_model import LiveModel

DEFAULT_PROMPT = "In the beginning"


def _initial_targets(page: PageContext) -> list[SteeringTarget]:
    """The latents in the URL, each with its coefficient or the default for its atlas max."""
    chosen, bad = [], []
    for value in url_params().get("steer", []):
        try:
            parsed = SteeringTarget.parse(value)
        except LiveInputError:
            bad.append(value)
            continue
        summary = latent_summary(page.workspace, page.atlas, parsed.sae, parsed.latent)
        if not summary:
            bad.append(value)
            continue
        coefficient = parsed.coefficient if parsed.coefficient is not None else default_coefficient(summary.max_act)
        coefficient = min(max(coefficient, -MAX_COEFFICIENT), MAX_COEFFICIENT)  # the number field's range
        chosen.append(parsed.with_coefficient(coefficient))
    if bad:
        st.error("Left out of the link, as this atlas has no such feature: " + ", ".join(md(b, 80) for b in bad))
    return chosen


def _targets_from_url_when_new(page: PageContext) -> None:
    """A link that names other features than this page last wrote (a feature page's Steer button,
    a shared link) replaces the features being edited; otherwise the session's edits stand."""
    in_url = url_params().get("steer", [])
    if "steer_targets" not in st.session_state or in_url != st.session_state.get("steer_url_written"):
        st.session_state["steer_targets"] = _initial_targets(page)
        set_coefficients(st.session_state["steer_targets"])


def _targets_editor(page: PageContext, live: LiveModel) -> list[SteeringTarget]:
    """The latents to steer with a coefficient each (slider and number field, with its scale), add and remove."""
    _targets_from_url_when_new(page)
    targets: list[SteeringTarget] = st.session_state["steer_targets"]
    st.subheader("Features to steer")
    if not targets:
        st.caption("None yet: find one below by its label, or press Steer on a feature's page.")
    kept = []
    for target in targets:
        summary = latent_summary(page.workspace, page.atlas, target.sae, target.latent)
        assert summary is not None, "every kept target was checked against this atlas when it was added"
        assert target.coefficient is not None, "every kept target was given its default coefficient when added"
        key = coefficient_key(target)
        st.session_state.setdefault(key, float(target.coefficient))
        st.session_state.setdefault(key + "_slider", st.session_state[key])
        scale = max(abs(st.session_state[key]), default_coefficient(summary.max_act), 1.0) * 2
        name, slider, number, remove = st.columns([3, 4, 2, 1], vertical_alignment="bottom")
        name.page_link(
            "pages/2_Feature.py",
            label=md(f"{target.sae} #{target.latent} · {summary.label}", 60),
            query_params=page.link_params(sae=target.sae, latent=target.latent),
        )
        slider.slider(
            "coefficient",
            -scale,
            scale,
            key=key + "_slider",
            label_visibility="collapsed",
            on_change=_copy,
            args=(key + "_slider", key),
        )
        number.number_input(
            "coefficient",
            key=key,
            min_value=-MAX_COEFFICIENT,
            max_value=MAX_COEFFICIENT,
            label_visibility="collapsed",
            on_change=_copy,
            args=(key, key + "_slider"),
            help="additive: added × the feature's decoder direction; replace and clamp: the feature's activation",
        )
        st.caption("coefficient " + md(scale_caption(float(st.session_state[key]), summary.max_act)))
        if not remove.button(":material/close:", key=f"remove_{key}", help="stop steering this feature"):
            kept.append(target.with_coefficient(float(st.session_state[key])))
    added = _feature_finder(page, live, kept)
    if added is not None:
        kept.append(added)
    if kept != targets:
        st.session_state["steer_targets"] = kept
        st.rerun()
    return kept


def _feature_finder(page: PageContext, live: LiveModel, kept: list[SteeringTarget]) -> SteeringTarget | None:
    """Find a feature of one SAE by words of its automatic label (or its number) and add it."""
    cols = st.columns([2, 3, 4, 1], vertical_alignment="bottom")
    sae_name = cols[0].selectbox("SAE", list(live.saes), format_func=option, key="steer_find_sae")
    query = cols[1].text_input(
        "Find a feature by its label", key="steer_find_query", placeholder="words of the label, or a feature number"
    )
    found = features_by_label(page.workspace.atlas_cursor(page.atlas), sae_name, query, limit=200)
    choices = {f"#{f.latent} · {f.label or '(no label)'} · max {f.max_act:.3g}": f for f in found}
    picked = cols[2].selectbox(
        f"Feature ({len(found)}{'+' if len(found) == 200 else ''} match, most frequent first)",
        list(choices),
        format_func=option,
        key="steer_find_pick",
        placeholder="no feature's label matches" if not found else "type to narrow",
    )
    if not cols[3].button("Add", disabled=picked is None, key="steer_find_add") or picked is None:
        return None
    summary = choices[picked]
    if any((t.sae, t.latent) == (sae_name, summary.latent) for t in kept):
        return None
    return SteeringTarget(sae_name, summary.latent, default_coefficient(summary.max_act))


def _copy(source: str, destination: str) -> None:
    st.session_state[destination] = st.session_state[source]


def _settings() -> tuple[str, GenerationSettings]:
    """Method and generation settings; their widget keys are what a history re-run sets."""
    defaults = GenerationSettings()
    method_in_url = text(url_params(), "method", DEFAULT_METHOD)
    for key, value in (
        ("steer_method", method_in_url if method_in_url in METHODS else DEFAULT_METHOD),
        *((f"steer_{name}", value) for name, value in vars(defaults).items()),
    ):
        st.session_state.setdefault(key, value)
    method = st.radio(
        "Method", list(METHODS), horizontal=True, key="steer_method", captions=[m.summary for m in METHODS.values()]
    )
    with st.expander("Generation settings"):
        cols = st.columns(6)
        settings = GenerationSettings(
            max_new_tokens=cols[0].number_input("max new tokens", 1, MAX_NEW_TOKENS, key="steer_max_new_tokens"),
            temperature=cols[1].number_input(
                "temperature", 0.0, 5.0, step=0.1, key="steer_temperature", help="0 = always the most likely token"
            ),
            top_p=cols[2].number_input("top p", 0.01, 1.0, step=0.05, key="steer_top_p"),
            frequency_penalty=cols[3].number_input(
                "frequency penalty", 0.0, MAX_FREQUENCY_PENALTY, step=0.1, key="steer_frequency_penalty"
            ),
            seed=cols[4].number_input("seed", 0, 2**31 - 1, key="steer_seed"),
            use_kv_cache=cols[5].toggle("KV cache", key="steer_use_kv_cache", help="faster; gives the same text"),
        )
    return method, settings


def _generate(
    page: PageContext,
    live: LiveModel,
    prompt: str,
    targets: list[SteeringTarget],
    method: str,
    settings: GenerationSettings,
) -> None:
    """Stream both completions into two columns, then the distribution shift; record the run."""
    try:
        stream = stream_comparison(live, prompt, targets, method, settings)
    except LiveInputError as error:
        st.error(md(error))
        return
    left, right = st.columns(2)
    left.markdown("**Default**")
    right.markdown("**Steered**")
    default_box, steered_box = left.empty(), right.empty()
    try:
        for state in stream:
            if isinstance(state, SteeringResult):
                break
            default, steered = live.token_strings(state.default_ids), live.token_strings(state.steered_ids)
            divergence = first_difference(state.default_ids, state.steered_ids)
            default_box.html(completion_html(prompt, default, divergence, generating=True))
            steered_box.html(completion_html(prompt, steered, divergence, generating=True))
    except LiveModelBusy as error:
        st.error(md(error))
        return
    finally:
        stream.close()  # a rerun (the user pressed Stop) leaves from here too, releasing the model
    assert isinstance(state, SteeringResult), "stream_comparison yields its SteeringResult last"
    record = state.to_record()
    default_box.html(completion_html(prompt_shown(record), record["default"]["tokens"], state.divergence))
    steered_box.html(completion_html(prompt_shown(record), record["steered"]["tokens"], state.divergence))
    _show_result_details(record)
    if page.read_only:
        st.caption("Read-only mode: this run is not recorded.")
        return
    run_id = page.store.record_experiment("steering", prompt[:80], live.model_hash, record)
    st.caption(
        f"Recorded as run {run_id[:8]} under {md(page.user.name)} "
        f"({state.seconds:.1f} s, {len(state.steered_ids)} tokens each)."
    )


def _show_result_details(record: dict) -> None:
    """Where the completions diverged and how the next-token distribution moved there."""
    if record["prompt_cut"]:
        st.warning(
            f"The prompt was longer than the model's context allows: its first {record['prompt_cut']} tokens "
            "were left out."
        )
    if record["interrupted"]:
        st.info("Generation was stopped before the end.")
    if record["divergence"] is None:
        st.info("The two completions are identical: try a larger coefficient or another feature.")
        return
    shift = record["divergence"]["next_tokens"]
    st.markdown(
        f"**Next-token distribution at the first difference** ({generated_token(record['divergence']['index'])}, "
        "counting from 1)"
    )
    st.plotly_chart(
        shift_chart(
            [row["text"] for row in shift], [row["p_default"] for row in shift], [row["p_steered"] for row in shift]
        ),
        key="shift_chart",
    )


def _write_url(page: PageContext, targets: list[SteeringTarget], method: str, prompt: str, run: str | None) -> None:
    """Features, method, prompt and the history run being read, so a copied link reopens this view."""
    written = [t.as_text() for t in targets]
    st.session_state["steer_url_written"] = written
    extra: dict = {"steer": written, "method": method, "prompt": prompt}
    st.query_params.from_dict(page.link_params(**extra, **({"run": run} if run else {})))


page = open_page("Steer")
live = require_live(page.atlas)
from analysis.live_model import LiveModelBusy  # noqa: E402  (torch: loaded by require_live above)
from analysis.steering import SteeringResult, stream_comparison  # noqa: E402

targets = _targets_editor(page, live)
method, settings = _settings()
st.session_state.setdefault("steer_prompt", text(url_params(), "prompt", DEFAULT_PROMPT))
prompt = st.text_area("Prompt", key="steer_prompt", height=90, max_chars=20_000)
run_column, stop_column = st.columns([1, 5])
run = run_column.button("Generate", type="primary", disabled=not targets)
stop_column.button("Stop", help="stop a generation that is running")
if run or st.session_state.pop("steer_run_now", False):
    _generate(page, live, prompt, targets, method, settings)
linked_run = st.session_state.setdefault("steer_linked_run", text(url_params(), "run") or None)
shown_run = steering_history(page, linked_run)
if shown_run != linked_run:  # the reader picked (or cleared) a row: the link's run is no longer the one shown
    st.session_state["steer_linked_run"] = None
_write_url(page, targets, method, prompt, shown_run)
