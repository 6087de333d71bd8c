"""Test your text and search via inference on the demo model and its SAEs: what encode_text,
latent_activations and search_text return, checked against a forward pass run by hand and
against the demo atlas's own examples."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from analysis import text_activations
from analysis.atlas.reader import feature_labels, latent_densities, open_atlas
from analysis.cli import main
from analysis.live_model import LiveInputError
from analysis.paths import DEMO_DIR, REPO_ROOT
from analysis.text_activations import encode_text, latent_activations, search_text

pytestmark = pytest.mark.model

TEXT = "In the beginning God created the heaven and the earth. The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def atlas():
    connection = open_atlas(DEMO_DIR / "atlas.duckdb")
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def encoded(live):
    return encode_text(live, TEXT)


@pytest.mark.parametrize("sae", ["transcoder-L1", "resid-L2"])
def test_encode_text_is_the_sae_encoding_of_the_hook_it_reads(live, encoded, sae):
    loaded = live.saes[sae]
    ids, cut = live.tokenize(TEXT)
    with torch.no_grad():
        _, cache = live.model.run_with_cache(ids, names_filter=[loaded.hook_name])
        expected = loaded.sae.encode(cache[loaded.hook_name])[0].numpy()
    assert encoded.token_ids == ids[0].tolist() and encoded.cut == cut == 0
    assert encoded.has_bos and encoded.tokens[0] == "<|endoftext|>" and encoded.tokens[1:3] == ["In", " the"]
    assert set(encoded.acts) == set(live.saes)
    np.testing.assert_allclose(encoded.acts[sae].dense(), expected, atol=1e-5)


def test_a_wide_sae_is_encoded_in_chunks_of_tokens_with_the_same_result(live, encoded, monkeypatch):
    monkeypatch.setattr(text_activations, "ENCODE_FLOATS", 5 * 2048)  # 5 tokens per chunk for 2048 latents
    chunked = encode_text(live, TEXT, ["transcoder-L3"]).acts["transcoder-L3"]
    np.testing.assert_allclose(
        chunked.dense(), encoded.acts["transcoder-L3"].dense(), atol=1e-5
    )  # matmuls round by shape


def test_latent_activations_are_that_latents_column(live, encoded):
    dense = encoded.acts["resid-L2"].dense()
    latent = int(dense[1:].max(axis=0).argmax())  # the latent with the largest value outside BOS
    trace = latent_activations(live, TEXT, "resid-L2", latent)
    assert trace.tokens == encoded.tokens and trace.cut == 0 and trace.has_bos
    np.testing.assert_allclose(trace.values, dense[:, latent], atol=1e-6)
    assert trace.peak == 1 + int(dense[1:, latent].argmax())


def top_example(atlas, sae: str, latent: int) -> tuple[list[int], int, float]:
    """The window tokens, position and value of a latent's best top example in the atlas."""
    return atlas.execute(
        "SELECT w.tokens, e.position, e.value FROM examples e JOIN saes s USING (sae) JOIN windows w USING (window_id) "
        "WHERE s.name = ? AND e.latent = ? AND e.kind = 'top' AND e.rank = 0",
        [sae, latent],
    ).fetchone()


def test_a_latents_top_example_finds_that_latent(live, atlas):
    sae, latent = atlas.execute(
        "SELECT s.name, f.latent FROM features f JOIN saes s USING (sae) ORDER BY f.max_act DESC LIMIT 1"
    ).fetchone()
    tokens, position, value = top_example(atlas, sae, latent)
    text = live.tokenizer.decode(tokens[1:])  # the window without its BOS

    best = search_text(live, text)[0]
    at_example = search_text(live, text, token_positions=[position], top_n=1)[0]

    assert (best.sae, best.latent) == (sae, latent) and best.peak == position
    assert (at_example.sae, at_example.latent) == (sae, latent)
    assert at_example.score == pytest.approx(value, rel=1e-4) and best.max_act == pytest.approx(value, rel=1e-4)


def test_bos_is_ignored_unless_asked_for(live, encoded):
    dense = {name: acts.dense() for name, acts in encoded.acts.items()}
    only_on_bos = {
        (name, int(latent))
        for name, acts in dense.items()
        for latent in np.flatnonzero((acts[0] > 0) & (acts[1:].max(axis=0) == 0))
    }
    assert only_on_bos  # the demo SAEs have latents that fire on BOS and nothing else
    found = {(hit.sae, hit.latent) for hit in search_text(live, TEXT, top_n=1000)}
    on_bos = {
        (hit.sae, hit.latent) for hit in search_text(live, TEXT, token_positions=[0], ignore_bos=False, top_n=1000)
    }
    assert not found & only_on_bos
    assert only_on_bos <= on_bos


def test_max_density_leaves_out_dense_latents(live, atlas):
    densities = latent_densities(atlas, live.saes)
    assert set(densities) == set(live.saes) and len(densities["resid-L2"]) == live.saes["resid-L2"].d_sae

    unfiltered = search_text(live, TEXT, top_n=50)
    filtered = search_text(live, TEXT, top_n=50, max_density=0.01, densities=densities)

    assert max(densities[hit.sae][hit.latent] for hit in unfiltered) > 0.5  # dense latents top the plain sum
    assert all(densities[hit.sae][hit.latent] <= 0.01 for hit in filtered) and len(filtered) == 50


def test_per_token_search_ranks_each_position(live, encoded):
    hits = search_text(live, TEXT, per_token=True, top_n=3, token_positions=[2, 5])
    assert [hit.position for hit in hits] == [2, 2, 2, 5, 5, 5]
    for position, found in ((2, hits[:3]), (5, hits[3:])):
        everything = sorted(
            (
                (-acts.dense()[position, latent], sae, latent)  # every SAE's every latent there
                for sae, acts in encoded.acts.items()
                for latent in range(acts.shape[1])
            )
        )
        assert [(hit.sae, hit.latent) for hit in found] == [(sae, latent) for _, sae, latent in everything[:3]]
        for hit in found:
            assert hit.score == pytest.approx(hit.values[position])
            assert hit.peak in (2, 5) and hit.max_act == max(hit.values[2], hit.values[5])


def test_chosen_positions_restrict_the_sum(live, encoded):
    hits = search_text(live, TEXT, token_positions=[3, 4], top_n=10, saes=["transcoder-L2"])
    dense = encoded.acts["transcoder-L2"].dense()
    sums = dense[3] + dense[4]
    assert [hit.latent for hit in hits] == list(np.argsort(-sums, kind="stable")[:10])
    for hit in hits:
        assert hit.sae == "transcoder-L2" and hit.position is None
        assert hit.score == pytest.approx(sums[hit.latent], rel=1e-5)
        assert hit.peak in (3, 4) and hit.max_act == pytest.approx(max(dense[3:5, hit.latent]))


def test_a_long_text_is_cut_from_the_left(live):
    text = " ".join(f"word{i}" for i in range(2000))
    encoded = encode_text(live, text, ["resid-L2"])
    assert len(encoded.token_ids) == live.n_ctx and encoded.cut > 0 and encoded.token_ids[0] == 8190
    assert "".join(encoded.tokens[1:]).endswith("word1999")
    assert latent_activations(live, text, "resid-L2", 0).cut == encoded.cut


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"text": ""}, "the text is empty"),
        ({"text": "   "}, "the text is empty"),
        ({"token_positions": [999]}, "token position 999 is out of range"),
        ({"token_positions": [-1]}, "token position -1 is out of range"),
        ({"token_positions": [0]}, "position 0 is BOS"),
        ({"saes": ["no-such-sae"]}, "no SAE called 'no-such-sae'"),
        ({"top_n": 0}, "from 1 to 1000"),
        ({"top_n": 1001}, "from 1 to 1000"),
        ({"max_density": 0.1}, "needs the latents' densities"),
        ({"max_density": 2.0}, "max density must be a fraction between 0 and 1"),
        ({"max_density": 0.1, "densities": {}}, "no densities for resid-L2"),
    ],
)
def test_bad_input_is_one_line(live, kwargs, message):
    with pytest.raises(LiveInputError, match=message):
        search_text(live, **({"text": TEXT} | kwargs))


def test_latent_activations_refuses_an_unknown_latent(live):
    with pytest.raises(LiveInputError, match="resid-L2 has no latent 5000"):
        latent_activations(live, TEXT, "resid-L2", 5000)


def test_feature_labels_by_sae_name(atlas):
    labels = feature_labels(atlas, [("resid-L2", 500), ("no-such-sae", 1)])
    assert labels == {("resid-L2", 500): "fires on ' the' · promotes ' drivers', ' device', ' driver'"}


def search_cli(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it (each run pays for importing torch and loading the model)."""
    return subprocess.run(
        [sys.executable, "-m", "analysis", "search-text", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_prints_hits_with_labels_as_json():
    result = search_cli("--text", TEXT, "--top", "5", "--max-density", "0.01", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["cut"] == 0 and report["tokens"][:2] == ["<|endoftext|>", "In"]
    assert len(report["hits"]) == 5 and all(hit["label"] is not None for hit in report["hits"])
    assert set(report["hits"][0]) == {"sae", "latent", "score", "max_act", "peak", "values", "position", "label"}
    assert len(report["hits"][0]["values"]) == len(report["tokens"])


def test_cli_prints_a_table_per_token(capsys):
    """In-process through the same entry point: a fresh interpreter per case costs ~10 s of imports."""
    assert (
        main(["search-text", "--text", TEXT, "--per-token", "--positions", "2", "--top", "3", "--device", "cpu"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(latents firing on more than 0.01 of the atlas's tokens left out)"  # the default, as the page
    assert lines[1].split() == ["at", "token", "sae", "latent", "score", "max", "peak", "token", "label"]
    assert len(lines) == 5 and all(line.startswith("2 ' the'") for line in lines[2:])  # "In the beginning"


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2():
    result = search_cli("--text", "x", "--positions", "3,x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == "error: --positions must be token positions separated by commas, like 3,4; not '3,x'\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "x", "--atlas", "/no/such.duckdb"], "error: no atlas at /no/such.duckdb"),
        (
            ["--text", "x", "--top", "0"],
            "error: argument --top: must be a whole number from 1 to 1,000, not 0 (see saescope search-text --help)",
        ),
    ],
)
def test_cli_bad_input_in_process(capsys, args, message):
    """Refused before any load: by the handler (returns 2) or by argparse's own check (exits 2)."""
    try:
        code = main(["search-text", *args, "--device", "cpu"])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert capsys.readouterr().err == message + "\n"
