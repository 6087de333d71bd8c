"""The triage queue's next feature on the demo atlas: nearest first in (sae, latent) order, within
the chosen SAEs, skipping reviewed features, wrapping round once back to the current feature."""

from __future__ import annotations

import pytest

from analysis.paths import DEMO_ATLAS
from dashboard.browse.feature_queries import FeatureFilter, next_in_queue
from dashboard.shell.settings import Settings
from dashboard.shell.workspace import Workspace


@pytest.fixture
def workspace(user_db) -> Workspace:
    return Workspace(Settings(read_only=False, atlas_dir=None, user_db=user_db))


def _review(workspace: Workspace, sae: int, latent: int, status: str = "interpretable") -> None:
    row = workspace.atlas(DEMO_ATLAS).sae_row(sae)
    workspace.store.annotate(str(row["content_hash"]), str(row["name"]), latent, "ann", status=status)


def test_the_next_feature_is_the_nearest_unreviewed_one_after_the_current(workspace):
    atlas = workspace.atlas(DEMO_ATLAS)
    assert next_in_queue(workspace, atlas, FeatureFilter(), None) == (0, 0)
    assert next_in_queue(workspace, atlas, FeatureFilter(), (0, 5)) == (0, 6)
    _review(workspace, 0, 6)
    _review(workspace, 0, 7, status="unreviewed")  # an annotation marked unreviewed stays in the queue
    assert next_in_queue(workspace, atlas, FeatureFilter(), (0, 5)) == (0, 7)
    last_of_first = int(atlas.saes["d_sae"].iloc[0]) - 1
    assert next_in_queue(workspace, atlas, FeatureFilter(), (0, last_of_first)) == (1, 0)


def test_the_queue_keeps_to_the_chosen_saes_and_wraps_round_once(workspace):
    atlas = workspace.atlas(DEMO_ATLAS)
    last_sae = len(atlas.saes) - 1
    last = (last_sae, int(atlas.saes["d_sae"].iloc[-1]) - 1)
    assert next_in_queue(workspace, atlas, FeatureFilter(), last) == (0, 0)
    assert next_in_queue(workspace, atlas, FeatureFilter(saes=(2,)), (last_sae, 10)) == (2, 0)
    end_of_second = (1, int(atlas.saes["d_sae"].iloc[1]) - 1)
    assert next_in_queue(workspace, atlas, FeatureFilter(saes=(1, 3)), end_of_second) == (3, 0)
    assert next_in_queue(workspace, atlas, FeatureFilter(min_max_act=1e9), (0, 5)) is None


def test_the_current_feature_comes_back_when_it_is_the_only_one_left(workspace):
    atlas = workspace.atlas(DEMO_ATLAS)
    alone = FeatureFilter(
        saes=(0,),
        min_max_act=float(
            workspace.cursor().execute(f"SELECT max(max_act) FROM {atlas.alias}.features WHERE sae = 0").fetchone()[0]
        ),
    )
    first = next_in_queue(workspace, atlas, alone, None)
    assert first is not None and next_in_queue(workspace, atlas, alone, first) == first
    _review(workspace, *first)
    assert next_in_queue(workspace, atlas, alone, first) is None
