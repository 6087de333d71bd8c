"""Home: which atlas is open, what model, corpus and SAEs it describes, their quality, and how far
triage has come. Reads the atlas and the bundle's files only: no torch, no model load."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.atlas.reader import documents_per_domain
from analysis.paths import REPO_ROOT
from dashboard.browse.bundle import DEMO_BUNDLE, read_bundle
from dashboard.browse.charts import density_histogram  # noqa: E402
from dashboard.shell.page import open_page  # noqa: E402
from dashboard.shell.plain_text import md, plain_frame  # noqa: E402

page = open_page("SAEscope")
atlas = page.atlas
st.caption(
    "A local-first workbench for mechanistic interpretability: features, circuits and steering on your own model."
)
st.caption(md(atlas.description))

model = atlas.meta["model"]
is_demo_model = (REPO_ROOT / model["spec"]).resolve() == (
    DEMO_BUNDLE / "model"
).resolve()  # specs inside the repo are relative
bundle = read_bundle(DEMO_BUNDLE) if is_demo_model else None
st.header(f"Model: {md(bundle.model_name if bundle else model['spec'])} ({md(model['architecture'])})")
if bundle is not None:
    config, model_metrics = bundle.model_config, bundle.metrics.get("model", {})
    cols = st.columns(5)
    cols[0].metric("Parameters", f"{model_metrics.get('parameters', 0) / 1e6:.1f} M")
    cols[1].metric("Layers", config.get("n_layer", "?"))
    cols[2].metric("d_model", config.get("n_embd", "?"))
    cols[3].metric(
        "Held-out loss",
        f"{model_metrics.get('heldout_loss', float('nan')):.3f}",
        help="nats per token on the held-out split",
    )
    cols[4].metric("Unigram baseline", f"{model_metrics.get('unigram_heldout_loss', float('nan')):.3f}")
st.caption(
    md(
        f"weights sha256 {model['content_hash'][:16]}… · atlas built on {atlas.meta['device']} with "
        + ", ".join(f"{name} {version}" for name, version in atlas.meta["versions"].items())
    )
)

corpus = atlas.meta["corpus"]
st.header("Corpus")
cols = st.columns(4)
cols[0].metric("Corpus", md(corpus["spec"]))
cols[1].metric("Tokens in the atlas", f"{atlas.meta['tokens']:,}")
cols[2].metric("Windows", f"{atlas.meta['windows']:,} × {atlas.meta['context']}")
cols[3].metric("Documents", f"{corpus['documents']:,}")
st.dataframe(plain_frame(documents_per_domain(page.workspace.atlas_cursor(atlas))), hide_index=True)

saes = atlas.saes
st.header(f"SAEs and transcoders ({len(saes)})")
reviewed = page.workspace.store.reviewed_counts(list(saes["content_hash"]))
# Two narrow tables rather than one of thirteen columns: each fits a laptop screen without scrolling.
quality = pd.DataFrame(
    {
        "name": saes["name"],
        "latents": saes["d_sae"],
        "L0": saes["mean_l0"],
        "var. explained": saes["explained_variance"],
        "CE recovered": saes["ce_loss_recovered"],
        "dead": saes["dead"],
        "dense": saes["dense"],
        "reviewed": [reviewed.get(h, 0) for h in saes["content_hash"]],
        "triage": [reviewed.get(h, 0) / d for h, d in zip(saes["content_hash"], saes["d_sae"])],
    }
)
st.dataframe(
    plain_frame(quality),
    hide_index=True,
    width="stretch",
    key="sae_quality",
    column_config={
        "latents": st.column_config.NumberColumn(help="d_sae: the number of features", format="%d"),
        "L0": st.column_config.NumberColumn(help="mean number of features firing per token", format="%.1f"),
        "var. explained": st.column_config.NumberColumn(
            help="explained variance of the input by the reconstruction", format="%.3f"
        ),
        "CE recovered": st.column_config.NumberColumn(
            help="CE loss recovered: share of the loss gap (zero-ablation to clean) the reconstruction closes",
            format="%.3f",
        ),
        "dead": st.column_config.NumberColumn(help="features that never fired", format="%d"),
        "dense": st.column_config.NumberColumn(help="features firing on more than 10% of tokens", format="%d"),
        "reviewed": st.column_config.NumberColumn(help="features a reviewer has given a status", format="%d"),
        "triage": st.column_config.ProgressColumn(
            "triage progress", min_value=0.0, max_value=1.0, format="percent", help="reviewed / latents"
        ),
    },
)
hooks = pd.DataFrame(
    {
        "name": saes["name"],
        "kind": ["transcoder" if t else "SAE" for t in saes["is_transcoder"]],
        "architecture": saes["architecture"],
        "reads": saes["hook_name"],
        "writes": saes["hook_name_out"].fillna(saes["hook_name"]),
    }
)
st.dataframe(plain_frame(hooks), hide_index=True, width="stretch", key="sae_hooks")
st.caption(
    f"Mean L0, dead (never fired) and dense (fired on more than 10% of tokens) count every token of the atlas; "
    f"explained variance and CE loss recovered (the reconstruction spliced in where the SAE writes) are measured "
    f"on the {-(-atlas.meta['total_windows'] // atlas.meta['quality_stride']):,} windows spread over the run whose "
    f"id is a multiple of {atlas.meta['quality_stride']}."
)
if "coverage" in atlas.meta:  # merged with --allow-partial: some windows of the run are missing
    coverage = atlas.meta["coverage"]
    st.caption(
        f"Partial atlas: {coverage['windows']:,} of the run's {coverage['total_windows']:,} windows "
        f"({coverage['windows'] / coverage['total_windows']:.0%}); missing window ranges {coverage['missing']}."
    )
st.plotly_chart(
    density_histogram(
        saes["density_log10_edges"].iloc[0],
        {name: counts for name, counts in zip(saes["name"], saes["density_counts"])},
    ),
    key="density_across_latents",
)
st.page_link(
    "pages/1_Features.py", label="Browse the features", icon=":material/search:", query_params=page.link_params()
)
