"""The committed demo bundle is what its README and SOURCES say, meets the floors, and fits the size budget."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

from analysis.demo.corpus import SOURCES, read_manifest
from analysis.demo.report import floors_met, write_readme, write_sources


def test_readme_and_sources_are_the_ones_the_measured_metrics_give(demo_dir, demo_metrics, tmp_path):
    write_readme(demo_metrics, tmp_path / "README.md")
    write_sources(demo_metrics, tmp_path / "SOURCES.md")
    assert (tmp_path / "README.md").read_text() == (demo_dir / "README.md").read_text()
    assert (tmp_path / "SOURCES.md").read_text() == (demo_dir / "SOURCES.md").read_text()


DEMO_SAES = ["resid-L2", "transcoder-L0", "transcoder-L1", "transcoder-L2", "transcoder-L3"]


@pytest.mark.parametrize("name", DEMO_SAES)
def test_sae_meets_the_floors(demo_metrics, name):
    assert set(demo_metrics["saes"]) == set(DEMO_SAES)
    assert all(floors_met(demo_metrics["saes"][name]).values()), demo_metrics["saes"][name]


def test_model_beats_the_unigram_baseline(demo_metrics):
    assert demo_metrics["model"]["heldout_loss"] < demo_metrics["model"]["unigram_heldout_loss"] - 1.0


def test_manifest_token_counts_match_sources_and_the_committed_heldout_stream(demo_dir, demo_metrics):
    rows = read_manifest(demo_dir / "corpus_manifest.jsonl.gz")
    assert {row["domain"] for row in rows} == {source.domain for source in SOURCES}
    for domain, counts in demo_metrics["corpus"].items():
        for split in ("train", "heldout"):
            assert counts[split] == sum(r["tokens"] for r in rows if r["domain"] == domain and r["split"] == split)
    heldout = [r for r in rows if r["split"] == "heldout"]
    stream = np.load(demo_dir / "heldout_tokens.npy")
    assert len(stream) == sum(r["tokens"] for r in heldout) + len(heldout)  # one EOS after each document
    assert len(stream) >= 1_000_000


def test_model_files_are_the_model_the_readme_describes(demo_dir, demo_metrics):
    config = json.loads((demo_dir / "model" / "config.json").read_text())
    model = demo_metrics["model"]
    assert (config["n_layer"], config["n_embd"], config["n_head"]) == (
        model["n_layer"],
        model["d_model"],
        model["n_head"],
    )
    with safe_open(demo_dir / "model" / "model.safetensors", "np") as weights:
        stored = {name: weights.get_slice(name).get_shape() for name in weights.keys()}
    # lm_head is tied to the token embedding and stored once.
    assert sum(int(np.prod(shape)) for shape in stored.values()) == model["parameters"]


def test_bundle_fits_the_size_budget(demo_dir):
    files = [p for p in demo_dir.rglob("*") if p.is_file() and ".cache" not in p.parts]
    assert sum(p.stat().st_size for p in files) < 80 * 2**20
    assert max(p.stat().st_size for p in files) < 50 * 2**20
