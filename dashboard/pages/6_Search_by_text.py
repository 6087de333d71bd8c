"""Search by text ("search via inference"): run the model on any text and list the latents, across
every loaded SAE, most active on it: summed over chosen tokens or token by token, BOS ignored, with a
density filter; each row opens its feature page."""

from __future__ import annotations

from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from analysis.atlas.reader import feature_labels  # noqa: E402
from analysis.live_model import LiveInputError, LiveModelBusy  # noqa: E402
from analysis.steering_target import SteeringTarget  # noqa: E402
from analysis.text_activations import search_text  # noqa: E402
from dashboard.browse.filter_controls import url_params  # noqa: E402
from dashboard.live.service import require_live  # noqa: E402
from dashboard.shell.page import open_page  # noqa: E402
from dashboard.shell.plain_text import md, option, plain_frame, visible  # noqa: E402
from dashboard.shell.url_state import text  # noqa: E402

MAX_TEXT_CHARS = 20_000


def _feature_url(atlas_key: str, sae: str, latent: int) -> str:
    return "Feature?" + urlencode({"atlas": atlas_key, "sae": sae, "latent": latent})


def _steer_url(atlas_key: str, sae: str, latent: int) -> str:
    return "Steer?" + urlencode({"atlas": atlas_key, "steer": SteeringTarget(sae, latent).as_text()})


def _token_cell(strings: list[str], position: int | None) -> str:
    assert position is not None, "per-token search gives every hit its position"
    return f"{position}: {visible(strings[position])}"


page = open_page("Search by text")
live = require_live(page.atlas)
params = url_params()
st.session_state.setdefault("search_text", text(params, "text"))
query = st.text_area(
    "Text",
    key="search_text",
    height=90,
    max_chars=MAX_TEXT_CHARS,
    placeholder="Type text; the latents most active on it are listed below",
)
atlas_saes = [name for name in page.atlas.saes["name"] if name in live.saes]
cols = st.columns([3, 1, 1, 1, 1])
chosen_saes = cols[0].multiselect("SAEs", atlas_saes, default=atlas_saes, format_func=option)
top_n = cols[1].number_input("show", 1, 500, 25)
max_density_text = cols[2].text_input("max density", placeholder="e.g. 0.01", help="hide latents denser than this")
per_token = cols[3].toggle("per token", help="the top latents of each token instead of the sum")
ignore_bos = cols[4].toggle("ignore BOS", value=True)

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

try:
    max_density = float(max_density_text) if max_density_text.strip() else None
except ValueError:
    st.error(f"max density must be a number, not '{md(max_density_text, 80)}'")
    st.stop()
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
            max_density=max_density,
            densities=densities,
            saes=chosen_saes,
        )
    except (LiveInputError, LiveModelBusy) as error:
        st.error(md(error))
        st.stop()
    labels_by_key = feature_labels(page.workspace.atlas_cursor(page.atlas), [(h.sae, h.latent) for h in hits])
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
    st.caption(
        f"{len(hits)} latents · "
        + ("the top latents of each token" if per_token else "activation summed over the chosen tokens")
    )
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
    )
