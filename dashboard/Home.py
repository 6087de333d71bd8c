"""Glassbox home page: what model and SAEs the open bundle holds, and how good they are."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from analysis.atlas.schema import AtlasError  # noqa: E402
from dashboard.atlas_summary import DEMO_ATLAS, read_atlas_summary  # noqa: E402
from dashboard.bundle import DEMO_BUNDLE, read_bundle  # noqa: E402

st.set_page_config(page_title="Glassbox", layout="wide")
st.title("Glassbox")
st.caption("A local-first workbench for mechanistic interpretability: features, circuits and steering on your own model.")

bundle = read_bundle(DEMO_BUNDLE)
config = bundle.model_config
model_metrics = bundle.metrics.get("model", {})

st.header(f"Model: {bundle.model_name} ({', '.join(config.get('architectures', ['?']))})")
cols = st.columns(5)
cols[0].metric("Parameters", f"{model_metrics.get('parameters', 0) / 1e6:.1f} M")
cols[1].metric("Layers", config.get("n_layer", "?"))
cols[2].metric("d_model", config.get("n_embd", "?"))
cols[3].metric("Held-out loss", f"{model_metrics.get('heldout_loss', float('nan')):.3f}",
               help="nats per token on the held-out split")
cols[4].metric("Unigram baseline", f"{model_metrics.get('unigram_heldout_loss', float('nan')):.3f}")

st.header(f"SAEs and transcoders ({len(bundle.saes)})")
rows = [
    {
        "name": sae.name,
        "kind": sae.kind,
        "architecture": sae.architecture,
        "reads": sae.hook,
        "writes": sae.hook_out or sae.hook,
        "d_sae": sae.d_sae,
        "mean L0": sae.quality.get("mean_l0"),
        "explained variance": sae.quality.get("explained_variance"),
        "CE loss recovered": sae.quality.get("ce_loss_recovered"),
        "dead": sae.quality.get("dead"),
        "dense": sae.quality.get("dense"),
    }
    for sae in bundle.saes
]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

st.header("Feature atlas")
try:
    atlas = read_atlas_summary(DEMO_ATLAS)
except AtlasError as error:
    st.error(f"No feature atlas to browse: {error}")
else:
    st.caption(atlas.description)
    st.dataframe(atlas.saes, hide_index=True, width="stretch")

corpus = bundle.metrics.get("corpus", {})
if corpus:
    st.header("Corpus")
    st.dataframe(
        pd.DataFrame([{"domain": name, **counts} for name, counts in corpus.items()]),
        hide_index=True,
        width="stretch",
    )
