"""Approximate nearest latents (faiss, analysis/atlas/faiss_neighbours.py) against the exact scan, on
decoders with the family structure of real SAEs (tests/decoder_families.py), and the switch between
them: in ``find_neighbours`` at its threshold, and in ``precompute --exact-neighbours-up-to`` with
what the atlas records and what ``verify`` checks."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from analysis.atlas.reader import open_atlas, read_meta
from analysis.atlas.weight_stats import find_neighbours, nearest_latents
from analysis.paths import DEMO_DIR
from tests.cli_run import cli_in_process
from tests.decoder_families import decoder_families

# recall@10 measured on these 4,096 latents (8 of 64 lists probed): 0.960 within one SAE; split
# into SAEs of 2,500 and 1,596 latents, 0.874 and 0.923 across them; floors leave a margin
RECALL_FLOOR, ACROSS_FLOOR = 0.9, 0.8


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float((found[:, :, None] == exact[:, None, :]).any(axis=1).mean())


@pytest.fixture(scope="module")
def families() -> torch.Tensor:
    return decoder_families(4096, 256, parents=256)


def test_the_index_finds_the_family_neighbours_of_structured_decoders(families):
    (near,), method = find_neighbours([families], approximate_above=4095)
    (exact,) = nearest_latents([families])
    assert find_neighbours([families[:64]], approximate_above=64)[1] == {"method": "exact"}  # at the threshold
    assert method["method"] == "faiss-ivf-flat" and method["lists"] == [64] and method["probes"] == 8
    owners, latents, cosines = near["same"]
    recall = _recall(latents, exact["same"][1])
    assert recall > RECALL_FLOOR, recall
    assert (
        abs(
            method["recall_at_10"]
            - _recall(
                latents[np.sort(np.random.default_rng(0).choice(4096, 1000, replace=False))],
                exact["same"][1][np.sort(np.random.default_rng(0).choice(4096, 1000, replace=False))],
            )
        )
        < 1e-4
    )
    # what it found is real: other latents, best first, with their true cosines
    assert (owners == 0).all() and not (latents == np.arange(4096)[:, None]).any()
    true = (families[:, None, :] * families[torch.from_numpy(latents)]).sum(-1).numpy()
    np.testing.assert_allclose(cosines, true, atol=1e-5)
    assert (np.diff(cosines, axis=1) <= 0).all()


def test_across_saes_the_index_merges_every_other_sae(families):
    directions = [families[:2500], None, families[2500:]]
    near, method = find_neighbours(directions, approximate_above=1000)
    exact = nearest_latents(directions)
    assert method["method"] == "faiss-ivf-flat" and near[1] == {}
    for sae, other in ((0, 2), (2, 0)):
        owners, latents, cosines = near[sae]["other"]
        assert (owners == other).all() and (np.diff(cosines, axis=1) <= 0).all()
        assert _recall(latents, exact[sae]["other"][1]) > ACROSS_FLOOR


def test_precompute_switches_to_the_index_above_its_threshold_and_verify_checks_it(tmp_path, capsys):
    sae = DEMO_DIR / "saes" / "transcoder-L0"  # 512 latents: 8 lists, all probed, so exact in effect
    atlas = tmp_path / "index.duckdb"
    args = ("precompute", "--sae", str(sae), "--tokens", "256", "--batch", "2", "--out", str(atlas))
    result = cli_in_process(capsys, *args, "--exact-neighbours-up-to", "511")
    assert result.returncode == 0, result.stderr
    connection = open_atlas(atlas)
    method = read_meta(connection)["neighbours"]
    rows = connection.execute("SELECT other_latent, cosine FROM neighbours ORDER BY latent, rank").fetchall()
    connection.close()
    assert method == {"method": "faiss-ivf-flat", "probes": 8, "lists": [8], "recall_at_10": 1.0, "sampled": 512}
    (exact,) = nearest_latents([load_file(sae / "sae_weights.safetensors")["W_dec"]])
    assert [r[0] for r in rows] == exact["same"][1].ravel().tolist()
    np.testing.assert_allclose([r[1] for r in rows], exact["same"][2].ravel(), atol=1e-5)

    # verify recomputes the cosine of every stored pair: one edited cosine is the only difference
    with duckdb.connect(str(atlas)) as connection:
        connection.execute("UPDATE neighbours SET cosine = cosine - 0.01 WHERE latent = 7 AND rank = 9")
    result = cli_in_process(capsys, "verify", str(atlas), "--sample", "512")
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "DIFFERS 512 sampled latents recomputed over 2 windows: transcoder-L0:7 neighbours"
        in result.stdout.splitlines()
    )


def test_a_latent_range_gets_its_rows_of_the_whole_runs_neighbours(families):
    """A latent-range shard's neighbours are the whole run's rows of its range, by either method."""
    halves = [families[:2500], families[2500:]]
    ranges = [(1000, 2000), (0, 798)]
    for above in (0, 10**9):  # the index, then the exact scan
        whole, method = find_neighbours(halves, approximate_above=above)
        ranged, ranged_method = find_neighbours(halves, approximate_above=above, latent_ranges=ranges)
        assert ranged_method == method
        for sae, (first, end) in enumerate(ranges):
            for scope, columns in whole[sae].items():
                for column, part in zip(columns, ranged[sae][scope]):
                    np.testing.assert_array_equal(part, column[first:end])
