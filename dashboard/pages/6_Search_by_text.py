"""Search by text ("search via inference"): run the model on any text and list the latents, across
every loaded SAE, most active on it: summed over chosen tokens, or token by token (one row per token
with its top latents), BOS ignored, latents denser than 1% left out unless asked; each latent opens
its feature page. The form is drawn before the model loads (a fresh server shows it and the loading
stages at once, not a blank page while torch imports)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from analysis.live_errors import LiveInputError
from analysis.preflight import DEFAULT_MAX_DENSITY
from analysis.steering_target import SteeringTarget
from dashboard.browse.feature_queries import feature_summaries
from dashboard.browse.filter_controls import url_params
from dashboard.live.service import require_live, unavailable_reason
from dashboard.shell.page import open_page
from dashboard.shell.plain_text import md, option, plain_frame, visible
from dashboard.shell.url_state import text

if TYPE_CHECKING:  # torch-backed: imported below, once the form is drawn and the model's loading shown
    from analysis.text_activations import TextHit

MAX_TEXT_CHARS = 20_000
PER_TOKEN = 3  # latents per token in the compact per-token table


def _feature_url(atlas_key: str, sae: str, latent: int) -> str:
    return "Feature?" + urlencode({"atlas": atlas_key, "sae": sae, "latent": latent})


def _steer_url(atlas_key: str, sae: str, latent: int) -> str:
    return "Steer?" + urlencode({"atlas": atlas_key, "steer": SteeringTarget(sae, latent).as_text()})


def _token_cell(strings: list[str], position: int | None) -> str:
    assert position is not None, "per-token search gives every hit its position"
    return f"{position}: {visible(strings[position])}"


def _named_link(atlas_key: str, hit: TextHit) -> str:
    """The feature's URL with a fragment naming it, which the link column shows (a fragment is never
    sent to the server, so the link opens the same page)."""
    return f"{_feature_url(atlas_key, hit.sae, hit.latent)}#{hit.sae} #{hit.latent} · {hit.score:.2f}"


def _per_token_table(atlas_key: str, hits: list[TextHit], strings: list[str], labels: dict) -> None:
    """One row per token: its top latents as links, and the first one's automatic label."""
    rows = {}
    for hit in hits:
        assert hit.position is not None, "per-token search gives every hit its position"
        rows.setdefault(hit.position, []).append(hit)
    table = pd.DataFrame(
        [
            {
                "token": _token_cell(strings, position),
                **{f"#{rank + 1}": _named_link(atlas_key, hit) for rank, hit in enumerate(best[:PER_TOKEN])},
                "label of #1": labels.get((best[0].sae, best[0].latent), ""),
            }
            for position, best in sorted(rows.items())
        ]
    )
    links = {
        f"#{rank + 1}": st.column_config.LinkColumn(f"#{rank + 1}", display_text=r"#(.+)$", width="medium")
        for rank in range(PER_TOKEN)
    }
    st.dataframe(plain_frame(table), hide_index=True, width="stretch", column_config=links, key="per_token_table")


page = open_page("Search by text")
if unavailable_reason(page.atlas) is not None:
    require_live(page.atlas)  # says why this page is off, and stops
params = url_params()
st.session_state.setdefault("search_text", text(params, "text"))
query = st.text_area(
    "Text",
    key="search_text",
    height=90,
    max_chars=MAX_TEXT_CHARS,
    placeholder="Type text; the latents most active on it are listed below",
)
atlas_saes = list(page.atlas.saes["name"])
cols = st.columns([3, 1, 1, 1, 1])
chosen_saes = cols[0].multiselect("SAEs", atlas_saes, default=atlas_saes, format_func=option)
per_token = cols[3].toggle("per token", help="the top latents of each token instead of the sum")
if per_token:
    top_n = cols[1].number_input("latents per token", 1, 50, PER_TOKEN, help=f"the table shows the top {PER_TOKEN}")
else:
    top_n = cols[1].number_input("show", 1, 500, 25)
max_density = cols[2].number_input(
    "max density",
    min_value=0.0,
    max_value=1.0,
    value=DEFAULT_MAX_DENSITY,
    step=0.005,
    format="%g",
    help="leave out latents firing on more than this fraction of the atlas's tokens: dense latents top every "
    "search and say little about the text (1 = no limit)",
)
ignore_bos = cols[4].toggle("ignore BOS", value=True)

live = require_live(page.atlas)
from analysis.live_model import LiveModelBusy  # noqa: E402  (torch: loaded by require_live above)
from analysis.text_activations import search_text  # noqa: E402

if missing := [name for name in chosen_saes if name not in live.saes]:
    st.caption(f"Not searched (the live model has not loaded them): {', '.join(md(name) for name in missing)}")
chosen_saes = [name for name in chosen_saes if name in live.saes]
positions: list[int] | None = None
if query.strip():
    try:
        ids, cut = live.tokenize(query)
    except LiveInputError as error:
        st.error(md(error))
        st.stop()
    strings = live.token_strings(ids[0])
    labels = [f"{i}: {visible(s)}" for i, s in enumerate(strings)]
    picked = st.multiselect("Sum over these tokens only (none = every token)", labels)
    positions = [labels.index(p) for p in picked] or None
    if cut:
        st.warning(f"The text is longer than the model's context: its first {cut} tokens were left out.")

st.query_params.from_dict(page.link_params(text=query[:2000]) if query else page.link_params())

if query.strip() and chosen_saes:
    densities = page.workspace.latent_densities(page.atlas, chosen_saes)
    try:
        hits = search_text(
            live,
            query,
            token_positions=positions,
            ignore_bos=ignore_bos,
            per_token=per_token,
            top_n=int(top_n),
            max_density=max_density if max_density < 1 else None,
            densities=densities,
            saes=chosen_saes,
        )
    except (LiveInputError, LiveModelBusy) as error:
        st.error(md(error))
        st.stop()
    index = {name: i for name in chosen_saes if (i := page.atlas.sae_index(name)) is not None}
    summaries = feature_summaries(page.workspace, page.atlas, [(index[h.sae], h.latent) for h in hits])
    labels_by_key = {
        (h.sae, h.latent): summaries[key].label for h in hits if (key := (index[h.sae], h.latent)) in summaries
    }
    table = pd.DataFrame(
        {
            "feature": [_feature_url(page.atlas_key, h.sae, h.latent) for h in hits],
            "steer": [_steer_url(page.atlas_key, h.sae, h.latent) for h in hits],
            "SAE": [h.sae for h in hits],
            "latent": [h.latent for h in hits],
            "score": [h.score for h in hits],
            "token" if per_token else "peak token": [
                _token_cell(strings, h.position if per_token else h.peak) for h in hits
            ],
            "density": [float(densities[h.sae][h.latent]) for h in hits],
            "automatic label": [labels_by_key.get((h.sae, h.latent), "") for h in hits],
        }
    )
    limit = f"latents denser than {max_density:g} left out" if max_density < 1 else "every density"
    if per_token:
        st.caption(f"the top latents of each of {len({h.position for h in hits})} tokens · {limit}")
        if hits:
            _per_token_table(page.atlas_key, hits, strings, labels_by_key)
    else:
        st.caption(f"{len(hits)} latents · activation summed over the chosen tokens · {limit}")
    with st.expander("Every latent, one row each") if per_token else nullcontext():
        st.dataframe(
            plain_frame(table),
            hide_index=True,
            width="stretch",
            column_config={
                "feature": st.column_config.LinkColumn("open", display_text="open"),
                "steer": st.column_config.LinkColumn("steer", display_text="steer"),
                "score": st.column_config.NumberColumn(format="%.3f"),
                "density": st.column_config.NumberColumn(format="%.2e"),
            },
            key="search_hits",
        )
