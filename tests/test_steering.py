"""Steering on the demo model and its SAEs: what each method does to the activation, and what the
comparison loop promises (same seed, same tokens; every position steered; clean stops)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any, cast

import duckdb
import pytest
import torch

from analysis.live_model import LiveInputError
from analysis.sampling import Completion, GenerationSettings
from analysis.steering import (
    DEFAULT_COEFFICIENT_MULTIPLIER,
    SteeringProgress,
    SteeringResult,
    default_coefficient,
    generate,
    steer,
    stream_comparison,
)
from analysis.steering_hooks import steering_hooks
from analysis.steering_methods import METHODS
from analysis.steering_target import SteeringTarget
from tests.atlas_rows import one_row
from tests.cli_run import cli_in_process

pytestmark = pytest.mark.model

PROMPT = "And the king said unto his servants,"
SHORT = GenerationSettings(max_new_tokens=8)


@pytest.fixture(scope="module")
def strong_promoter(demo_dir) -> tuple[str, int, float, list[int]]:
    """The last transcoder's latent whose decoder row promotes its top token most (it writes just before the
    unembedding, so its atlas logit effect is what steering it does): (SAE, latent, max act, top tokens)."""
    with duckdb.connect(str(demo_dir / "atlas.duckdb"), read_only=True) as atlas:
        return one_row(
            atlas,
            """SELECT s.name, f.latent, f.max_act, f.top_logit_tokens FROM features f JOIN saes s USING (sae)
            WHERE s.name = 'transcoder-L3' AND f.density > 0.001
            ORDER BY f.top_logit_values[1] DESC LIMIT 1""",
        )


def activations(live, hook: str, hooks=()) -> tuple[torch.Tensor, dict]:
    """The prompt's activations at ``hook`` (and the whole cache) with ``hooks`` installed."""
    ids, _ = live.tokenize(PROMPT)
    with torch.no_grad(), live.model.hooks(fwd_hooks=list(hooks)):
        _, cache = live.model.run_with_cache(ids)
    return cache[hook][0], cache


def test_coefficient_zero_reproduces_plain_generation(live):
    settings = GenerationSettings(max_new_tokens=6, temperature=0.8, seed=3)
    result = steer(live, PROMPT, [SteeringTarget("resid-L2", 7, 0.0)], "additive", settings)
    assert result.steered_ids == result.default_ids == generate(live, PROMPT, settings).ids
    assert result.divergence is None and result.next_tokens == []


def test_additive_adds_the_coefficient_times_each_decoder_row(live):
    sae = live.sae("resid-L2")
    targets = [SteeringTarget("resid-L2", 7, 3.0), SteeringTarget("resid-L2", 40, -1.5)]
    plain, _ = activations(live, sae.hook_name)
    steered, _ = activations(live, sae.hook_name, steering_hooks(live, targets, "additive"))
    expected = 3.0 * sae.sae.W_dec[7] - 1.5 * sae.sae.W_dec[40]
    torch.testing.assert_close(steered - plain, expected.expand_as(plain), atol=1e-5, rtol=0)


def test_a_transcoder_is_steered_where_it_writes(live):
    sae = live.sae("transcoder-L1")
    hooks = steering_hooks(live, [SteeringTarget("transcoder-L1", 5, 2.0)], "additive")
    assert [name for name, _ in hooks] == ["blocks.1.hook_mlp_out"]
    plain, _ = activations(live, "blocks.1.hook_mlp_out")
    steered, _ = activations(live, "blocks.1.hook_mlp_out", hooks)
    torch.testing.assert_close(steered - plain, (2.0 * sae.sae.W_dec[5]).expand_as(plain), atol=1e-5, rtol=0)


def test_generated_positions_are_steered_too(live):
    """With the KV cache each step runs one new token; it must carry the steering vector like the prompt."""
    sae = live.sae("resid-L2")
    seen = []
    spy = (sae.hook_name, lambda activation, hook: seen.append(activation[0].clone()))
    ids, _ = live.tokenize(PROMPT)
    row = Completion(
        live.model, ids, SHORT, steering_hooks(live, [SteeringTarget("resid-L2", 7, 5.0)], "additive") + [spy]
    )
    while not row.done:
        row.step()
    assert [len(s) for s in seen] == [ids.shape[1]] + [1] * (SHORT.max_new_tokens - 1)
    everything = torch.cat([ids, torch.tensor([row.ids[:-1]])], dim=1)
    with torch.no_grad():
        _, cache = live.model.run_with_cache(everything, names_filter=sae.hook_name)
    plain = cache[sae.hook_name][0]
    torch.testing.assert_close(torch.cat(seen) - plain, (5.0 * sae.sae.W_dec[7]).expand_as(plain), atol=1e-4, rtol=0)


def test_steering_a_promoting_latent_raises_its_top_tokens(live, strong_promoter):
    name, latent, max_act, top_tokens = strong_promoter
    hooks = steering_hooks(live, [SteeringTarget(name, latent, default_coefficient(max_act))], "additive")
    ids, _ = live.tokenize(PROMPT)
    with torch.no_grad():
        p_plain = torch.softmax(live.model(ids)[0, -1], -1)
        p_steered = torch.softmax(live.model.run_with_hooks(ids, fwd_hooks=hooks)[0, -1], -1)
    promoted = list(top_tokens[:5])
    assert p_steered[promoted].sum() > 2 * p_plain[promoted].sum()


def test_kv_cache_on_and_off_agree(live):
    hooks = steering_hooks(live, [SteeringTarget("transcoder-L2", 204, 15.0)], "additive")
    ids, _ = live.tokenize(PROMPT)
    rows = [
        Completion(live.model, ids, GenerationSettings(max_new_tokens=6, temperature=0, use_kv_cache=cached), hooks)
        for cached in (True, False)
    ]
    while not rows[0].done:
        logits_cached, logits_full = (row.step() for row in rows)
        torch.testing.assert_close(logits_cached, logits_full, atol=1e-4, rtol=1e-4)
    assert rows[0].ids == rows[1].ids


@pytest.mark.parametrize("name", ["resid-L2", "transcoder-L1"])
def test_clamp_equals_encode_set_decode_plus_error(live, name):
    sae = live.sae(name)
    latent, value = 11, 6.0
    reads, writes = sae.hook_name, sae.hook_name_out or sae.hook_name
    _, plain = activations(live, writes)
    clamped, _ = activations(live, writes, steering_hooks(live, [SteeringTarget(name, latent, value)], "clamp"))
    with torch.no_grad():
        features = sae.sae.encode(plain[reads][0])
        chosen = features.clone()
        chosen[:, latent] = value
        expected = sae.sae.decode(chosen) + (plain[writes][0] - sae.sae.decode(features))
    torch.testing.assert_close(clamped, expected, atol=1e-5, rtol=1e-5)


def test_replace_sets_the_component_along_the_decoder_direction(live):
    sae = live.sae("resid-L2")
    direction = sae.sae.W_dec[7] / sae.sae.W_dec[7].norm()
    plain, _ = activations(live, sae.hook_name)
    replaced, _ = activations(
        live, sae.hook_name, steering_hooks(live, [SteeringTarget("resid-L2", 7, 4.0)], "replace")
    )
    torch.testing.assert_close(replaced @ direction, torch.full((len(plain),), 4.0), atol=1e-4, rtol=0)
    orthogonal = lambda x: x - (x @ direction)[:, None] * direction  # noqa: E731
    torch.testing.assert_close(orthogonal(replaced), orthogonal(plain), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "make_call, message",
    [
        (lambda: ("   ", [SteeringTarget("resid-L2", 7, 1.0)], SHORT), "the text is empty"),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, float("nan"))], SHORT), "finite number"),
        # a wrong type on purpose: what a caller without type checks could pass
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, cast(Any, "abc"))], SHORT), "finite number"),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1e6)], SHORT), "out of range"),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 5000, 1.0)], SHORT), "resid-L2 has no latent 5000"),
        (lambda: (PROMPT, [SteeringTarget("nope", 1, 1.0)], SHORT), "no SAE called 'nope' is loaded; loaded: resid-L2"),
        (lambda: (PROMPT, [], SHORT), "at least one feature"),
        (
            lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], GenerationSettings(max_new_tokens=0)),
            "max_new_tokens",
        ),
        (
            lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], GenerationSettings(max_new_tokens=10**6)),
            "max_new_tokens",
        ),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], GenerationSettings(max_new_tokens=255)), "no room"),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], GenerationSettings(top_p=0)), "top_p"),
        (lambda: (PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], GenerationSettings(temperature=-1)), "temperature"),
    ],
)
def test_bad_input_is_a_one_line_live_input_error(live, make_call, message):
    with pytest.raises(LiveInputError, match=message.replace("(", r"\(")):
        prompt, targets, settings = make_call()
        stream_comparison(live, prompt, targets, "additive", settings)


def test_unknown_method_is_refused(live):
    with pytest.raises(LiveInputError, match="choose from " + ", ".join(METHODS)):
        steer(live, PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], "multiply", SHORT)


def test_an_over_long_prompt_is_cut_from_the_left(live):
    prompt = " ".join(f"verse {i}" for i in range(300)) + " the end"
    settings = GenerationSettings(max_new_tokens=4)
    result = steer(live, prompt, [SteeringTarget("resid-L2", 7, 1.0)], "additive", settings)
    full = len(live.tokenizer.encode(prompt, add_special_tokens=False))
    assert len(result.prompt_tokens) == live.n_ctx - settings.max_new_tokens
    assert result.prompt_cut == full - (len(result.prompt_tokens) - 1)  # BOS is kept
    assert result.prompt_tokens[0] == live.tokenizer.decode([live.tokenizer.bos_token_id])
    assert "".join(result.prompt_tokens[-3:]).endswith(" the end")
    assert len(result.default_ids) == 4


def test_a_stop_event_interrupts_cleanly_and_frees_the_model(live):
    stop = threading.Event()
    states = []
    for state in stream_comparison(
        live, PROMPT, [SteeringTarget("resid-L2", 7, 1.0)], "additive", GenerationSettings(max_new_tokens=50), stop
    ):
        states.append(state)
        if len(states) == 3:
            stop.set()
    *progress, result = states
    assert all(isinstance(s, SteeringProgress) for s in progress) and isinstance(result, SteeringResult)
    assert result.interrupted and len(result.default_ids) == len(result.steered_ids) == 3
    assert progress[-1].default_text == result.default_text
    with live.exclusive():  # released: this would wait (and time out) otherwise
        pass


def test_a_strong_steer_diverges_and_records_everything(live):
    latent = 204
    result = steer(
        live, PROMPT, [SteeringTarget("transcoder-L2", latent, 40.0)], "additive", GenerationSettings(max_new_tokens=12)
    )
    assert (
        result.divergence is not None
        and result.default_ids[: result.divergence] == result.steered_ids[: result.divergence]
    )
    chosen = {n.token: n for n in result.next_tokens}
    assert len(chosen) == 10 and result.steered_ids[result.divergence] in chosen
    record = json.loads(json.dumps(result.to_record()))
    assert record["targets"] == [{"sae": "transcoder-L2", "latent": latent, "coefficient": 40.0}]
    assert record["settings"] == GenerationSettings(max_new_tokens=12).to_dict()
    assert record["model_hash"] == live.model_hash
    assert record["sae_hashes"] == {"transcoder-L2": live.sae_hashes["transcoder-L2"]}
    assert record["divergence"]["index"] == result.divergence
    assert record["steered"]["text"] == result.steered_text != result.default_text


def test_default_coefficient_scales_with_max_activation():
    assert default_coefficient(2.5) == DEFAULT_COEFFICIENT_MULTIPLIER * 2.5
    with pytest.raises(LiveInputError):
        default_coefficient(float("inf"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", "steer", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_cli_prints_the_record_as_json():
    result = run_cli(
        "--prompt", PROMPT, "--feature", "transcoder-L2:204:40", "--max-new-tokens", "6", "--device", "cpu", "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["method"] == "additive" and record["settings"]["max_new_tokens"] == 6
    assert len(record["default"]["ids"]) == len(record["steered"]["ids"]) == 6


def test_cli_bad_input_is_one_clear_line(capsys):
    """In this process (the subprocess path is ``test_cli_prints_the_record_as_json``'s)."""
    result = cli_in_process(capsys, "steer", "--prompt", PROMPT, "--feature", "resid-L2:abc:1")
    assert result.returncode == 2
    assert "the latent must be a whole number" in result.stderr and "Traceback" not in result.stderr
