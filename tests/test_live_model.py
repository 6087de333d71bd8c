"""The live model: what it loads from an atlas's record, and how sessions share it (one at a time,
a bounded queue, nobody's steering leaking into anybody else's text)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pytest

from analysis.live_model import LiveInputError, LiveModelBusy, LiveSpecs
from analysis.sampling import GenerationSettings
from analysis.steering import generate
from analysis.steering_target import SteeringTarget

pytestmark = pytest.mark.model

SETTINGS = GenerationSettings(max_new_tokens=12, temperature=0.8, seed=3)


@pytest.fixture(scope="module")
def atlas_meta(demo_dir) -> dict:
    with duckdb.connect(str(demo_dir / "atlas.duckdb"), read_only=True) as atlas:
        return {key: json.loads(value) for key, value in atlas.execute("SELECT key, value FROM meta").fetchall()}


def test_an_atlas_names_the_model_and_saes_it_was_built_from(live, atlas_meta, demo_dir):
    specs = LiveSpecs.from_atlas_meta(atlas_meta)
    assert specs.model == str(demo_dir / "model") and specs.saes == (str(demo_dir / "saes"),)
    assert specs.unavailable_reason() is None
    assert live.model_hash == atlas_meta["model"]["content_hash"]
    assert {info["name"]: info["content_hash"] for info in atlas_meta["saes"]} == live.sae_hashes


def test_a_model_that_is_not_here_is_named_in_the_reason():
    reason = LiveSpecs(model="/nowhere/model", saes=()).unavailable_reason()
    assert reason is not None and "not available here" in reason and "/nowhere/model" in reason
    reason = LiveSpecs(model="some-org/not-downloaded", saes=()).unavailable_reason()
    assert reason is not None and "not available offline" in reason


def test_text_is_cut_from_the_left_to_fit_and_empty_text_is_refused(live):
    ids, cut = live.tokenize("one two three four five six", keep_last=4)
    assert ids.shape == (1, 4) and ids[0, 0].item() == live.tokenizer.bos_token_id and cut > 0
    assert live.token_strings(ids[0])[-1] == " six"
    with pytest.raises(LiveInputError, match="empty"):
        live.tokenize(" \n ")
    with pytest.raises(LiveInputError, match="numbered 0 to 1023"):
        live.check_latent("resid-L2", 1024)


@pytest.mark.slow
def test_concurrent_sessions_queue_and_each_gets_its_own_steering(live):
    """Four sessions at once, two steering and two not: each text equals what it gets alone."""
    jobs = [(), (SteeringTarget("resid-L2", 938, 30.0),), (), (SteeringTarget("transcoder-L3", 5, 20.0),)]
    alone = [generate(live, "In the beginning", SETTINGS, targets).ids for targets in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda targets: generate(live, "In the beginning", SETTINGS, targets).ids, jobs))
    assert together == alone
    assert alone[0] == alone[2] and alone[1] != alone[0]


def test_a_full_queue_is_told_the_model_is_busy(live):
    live.max_waiting, live.wait_seconds = 1, 5.0
    try:
        holding, waiter_started = threading.Event(), threading.Event()
        release = threading.Event()

        def hold() -> None:
            with live.exclusive():
                holding.set()
                release.wait(10)

        def wait_in_line() -> None:
            waiter_started.set()
            with live.exclusive():
                pass

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait(5)
        waiter = threading.Thread(target=wait_in_line)
        waiter.start()
        waiter_started.wait(5)
        while live._waiting < 1:
            threading.Event().wait(0.01)
        with pytest.raises(LiveModelBusy, match="already waiting"):
            with live.exclusive():
                pass
        release.set()
        holder.join(10)
        waiter.join(10)
        with live.exclusive():  # everybody gone: free again
            pass
    finally:
        live.max_waiting, live.wait_seconds = 4, 120.0
