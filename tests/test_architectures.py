"""Every supported architecture through every capability, on tiny random-initialised models saved
as ``transformers`` saves them and SAEs/transcoders saved by sae-lens (tests/arch_models.py).

Each test records its (architecture, capability) cell when it starts and again when it passes;
with SAESCOPE_SUPPORT_MATRIX_OUT=FILE.json the run writes those cells there, for
``python -m analysis.support_matrix FILE.json --write docs/support_matrix.md README.md``. The last
test checks that the committed table says "yes" exactly for the cells that passed in this run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis.cli import main
from analysis.model_loading import load_model
from analysis.paths import REPO_ROOT
from analysis.steering_hooks import SteeringTarget, steering_hooks
from analysis.support_matrix import cells, embedded, render
from tests.arch_models import ARCHITECTURES, CLASS_NAMES, assert_edges_equal_a_frozen_intervention, put_in_hf_cache
from tests.atlas_rows import atlas_rows

pytestmark = [pytest.mark.model, pytest.mark.slow]

CAPABILITIES = (
    "load",
    "hub cache",
    "bfloat16 logits",
    "precompute",
    "logit effects",
    "neighbours",
    "steer",
    "search-text",
    "graph",
)
MATRIX_FILE = REPO_ROOT / "docs" / "support_matrix.md"
TEXT = "And the king said unto his servants, Let there be light"
_ran: set[tuple[str, str]] = set()
_passed: set[tuple[str, str]] = set()


def ran(name: str, capability: str) -> tuple[str, str]:
    """Record that the (architecture, capability) cell's test started; add it to _passed at its end."""
    _ran.add((name, capability))
    return name, capability


def results() -> dict:
    return {
        "capabilities": list(CAPABILITIES),
        "architectures": {name: CLASS_NAMES[name] for name in ARCHITECTURES},
        "ran": sorted(_ran),
        "passed": sorted(_passed),
    }


@pytest.fixture(scope="module", autouse=True)
def _support_matrix():
    """After the module: write the cells that ran and passed, when asked to (never a tracked file)."""
    yield
    if out := os.environ.get("SAESCOPE_SUPPORT_MATRIX_OUT"):
        Path(out).write_text(json.dumps(results(), indent=1))


def tokens(live) -> torch.Tensor:
    return live.tokenize(TEXT)[0]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_hook_activations_equal_the_hugging_face_hidden_states(tiny, name):
    cell = ran(name, "load")
    from transformers import AutoModelForCausalLM

    live = tiny.live(name)
    model = live.model
    # Gemma 2's attention soft-capping is computed only by eager attention (sdpa leaves it out)
    eager = "eager" if name == "gemma2" else None
    hf = AutoModelForCausalLM.from_pretrained(tiny.folder(name), attn_implementation=eager).eval()
    ids = tokens(live)
    with torch.no_grad():
        expected = hf(ids, output_hidden_states=True)
        logits, cache = model.run_with_cache(ids)
    n_layers = model.cfg.n_layers
    assert len(ids[0]) > 8  # longer than the sliding windows, so local attention is exercised
    for layer in range(n_layers):
        torch.testing.assert_close(
            cache[f"blocks.{layer}.hook_resid_pre"], expected.hidden_states[layer], atol=1e-4, rtol=0
        )
    # Hugging Face's last hidden state is after the final norm
    final = model.ln_final(cache[f"blocks.{n_layers - 1}.hook_resid_post"])
    torch.testing.assert_close(final, expected.hidden_states[n_layers], atol=1e-4, rtol=0)
    torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=0)
    assert live.loaded.architecture == CLASS_NAMES[name]
    for hook in ("hook_resid_pre", "ln2.hook_normalized", "hook_mlp_out", "attn.hook_z", "hook_resid_post"):
        assert f"blocks.0.{hook}" in model.hook_dict
    _passed.add(cell)


def test_info_loads_hub_ids_from_the_local_cache_offline(tiny, tmp_path):
    """Every architecture as a hub id in a temporary HF_HOME, HF_HUB_OFFLINE=1: the CLI's own ``info``
    in one fresh interpreter (one start-up for all eight; each call goes through ``main`` as typed)."""
    for name in ARCHITECTURES:
        ran(name, "hub cache")
        put_in_hf_cache(tiny.folder(name), tmp_path / "hf", f"saescope-tiny/{name}")
    env = os.environ | {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    calls = [
        ["info", "--model", f"saescope-tiny/{name}", "--sae", str(tiny.saes(name)), "--device", "cpu", "--json"]
        for name in ARCHITECTURES
    ]
    script = "import json, sys\nfrom analysis.cli import main\nfor args in json.loads(sys.argv[1]):\n    assert main(args) == 0, args\n"
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(calls)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    decoder = json.JSONDecoder()
    infos, rest = [], result.stdout.strip()
    while rest:
        info, end = decoder.raw_decode(rest)
        infos.append(info)
        rest = rest[end:].strip()
    assert len(infos) == len(ARCHITECTURES)
    for name, info in zip(ARCHITECTURES, infos):
        assert info["model"]["architecture"] == CLASS_NAMES[name]
        assert info["model"]["path"].startswith(str(tmp_path / "hf" / "hub" / f"models--saescope-tiny--{name}"))
        assert [s["hook"] for s in info["saes"]] == [
            "blocks.1.hook_resid_pre",
            *(f"blocks.{i}.ln2.hook_normalized" for i in range(2)),
        ]
        _passed.add((name, "hub cache"))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_bfloat16_computes_what_float32_computes_to_bfloat16_precision(tiny, name):
    cell = ran(name, "bfloat16 logits")
    ids = tokens(tiny.live(name))
    low = load_model(str(tiny.folder(name)), device="cpu", dtype="bfloat16").model
    assert low.W_U.dtype == torch.bfloat16
    with torch.no_grad():
        reference = tiny.live(name).model(ids).float()
        logits = low(ids).float()
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    assert (logits[0, -1].topk(5).indices == reference[0, -1].topk(5).indices).float().mean() >= 0.6
    _passed.add(cell)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_precompute_statistics_equal_a_brute_force_pass(tiny, name):
    cell = ran(name, "precompute")
    live, atlas = tiny.live(name), tiny.atlas(name)
    windows = torch.tensor([w for (w,) in atlas_rows(atlas, "SELECT tokens FROM windows ORDER BY window_id")])
    assert windows.shape == (8, 32)
    special = torch.tensor(sorted(set(live.tokenizer.all_special_ids)))
    counted = ~torch.isin(windows, special)
    with torch.no_grad():
        _, cache = live.model.run_with_cache(windows)
    for sae_index, (sae_name,) in enumerate(atlas_rows(atlas, "SELECT name FROM saes ORDER BY sae")):
        loaded = live.sae(sae_name)
        acts = loaded.sae.encode(cache[loaded.hook_name])[counted]  # [counted tokens, d_sae]
        rows = atlas_rows(
            atlas, "SELECT fire_count, max_act, act_sum FROM features WHERE sae = ? ORDER BY latent", sae_index
        )
        fire, top, total = (torch.tensor(column, dtype=torch.float64) for column in zip(*rows))
        assert torch.equal(fire, (acts > 0).sum(0).double())
        torch.testing.assert_close(top, acts.max(0).values.double(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(total, acts.double().sum(0), atol=1e-3, rtol=1e-5)
        assert fire.sum() > 0.1 * acts.numel()  # the SAEs really fire
    _passed.add(cell)


def injected_logits(live, ids: torch.Tensor, hook: str, direction: torch.Tensor) -> torch.Tensor:
    """The last position's logits with ``direction`` added at ``hook``, 10^4 times the residual's norm."""

    def inject(resid, hook):
        return resid + 1e4 * direction / direction.norm() * resid.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        return live.model.run_with_hooks(ids, fwd_hooks=[(hook, inject)])[0, -1]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_logit_effects_are_the_models_own_logits_for_the_direction(tiny, name):
    """A decoder row of the last transcoder added (very large) to the last residual stream: the model's
    own final norm and unembedding then rank tokens as the atlas's logit effects do. Adding and
    subtracting it, the difference cancels what does not depend on the direction (norm and unembedding
    biases), as the atlas leaves them out."""
    cell = ran(name, "logit effects")
    live, atlas = tiny.live(name), tiny.atlas(name)
    last = live.model.cfg.n_layers - 1
    loaded = live.sae(f"transcoder-L{last}")
    (sae_index,) = atlas_rows(atlas, "SELECT sae FROM saes WHERE name = ?", loaded.name)[0]
    ids = tokens(live)
    for latent in (0, 7, 31):
        direction = loaded.sae.W_dec[latent].detach()
        hook = f"blocks.{last}.hook_resid_post"
        logits = injected_logits(live, ids, hook, direction) - injected_logits(live, ids, hook, -direction)
        ((top, bottom),) = atlas_rows(
            atlas,
            "SELECT top_logit_tokens, bottom_logit_tokens FROM features WHERE sae = ? AND latent = ?",
            sae_index,
            latent,
        )
        assert logits.topk(10).indices.tolist() == list(top)
        assert logits.topk(10, largest=False).indices.tolist() == list(bottom)
    _passed.add(cell)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_neighbours_are_the_nearest_decoder_directions(tiny, name):
    cell = ran(name, "neighbours")
    live, atlas = tiny.live(name), tiny.atlas(name)
    names = [n for (n,) in atlas_rows(atlas, "SELECT name FROM saes ORDER BY sae")]
    loaded = live.sae("transcoder-L0")
    units = torch.nn.functional.normalize(loaded.sae.W_dec.detach(), dim=1)
    cosine = units @ units.T
    cosine.fill_diagonal_(-2)
    for latent in (0, 5, 50):
        rows = atlas_rows(
            atlas,
            "SELECT other_latent, cosine FROM neighbours WHERE sae = ? AND latent = ? AND scope = 'same' ORDER BY rank",
            names.index(loaded.name),
            latent,
        )
        best = cosine[latent].topk(10)
        assert [r[0] for r in rows] == best.indices.tolist()
        torch.testing.assert_close(torch.tensor([r[1] for r in rows]), best.values, atol=1e-5, rtol=0)
    _passed.add(cell)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_steering_adds_the_row_and_clamps_through_the_sae(tiny, name, tmp_path, capsys):
    cell = ran(name, "steer")
    live = tiny.live(name)
    ids = tokens(live)
    resid = live.sae("resid-L1")

    def at(hook: str, hooks=()):
        with torch.no_grad(), live.model.hooks(fwd_hooks=list(hooks)):
            _, cache = live.model.run_with_cache(ids)
        return cache[hook][0], cache

    plain, cache = at(resid.hook_name)
    steered, _ = at(resid.hook_name, steering_hooks(live, [SteeringTarget("resid-L1", 3, 2.5)], "additive"))
    torch.testing.assert_close(steered - plain, (2.5 * resid.sae.W_dec[3]).expand_as(plain), atol=1e-5, rtol=0)
    transcoder = live.sae("transcoder-L0")
    clamped, _ = at(transcoder.hook_name_out, steering_hooks(live, [SteeringTarget("transcoder-L0", 11, 4.0)], "clamp"))
    with torch.no_grad():
        features = transcoder.sae.encode(cache[transcoder.hook_name][0])
        chosen = features.clone()
        chosen[:, 11] = 4.0
        error = cache[transcoder.hook_name_out][0] - transcoder.sae.decode(features)
        torch.testing.assert_close(clamped, transcoder.sae.decode(chosen) + error, atol=1e-5, rtol=1e-5)
    args = ["steer", "--model", str(tiny.folder(name)), "--sae", str(tiny.saes(name)), "--prompt", TEXT]
    args += ["--feature", "resid-L1:3:40", "--max-new-tokens", "4", "--device", "cpu", "--json"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert 0 < len(record["steered"]["ids"]) <= 4 and 0 < len(record["default"]["ids"]) <= 4
    _passed.add(cell)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_search_text_sums_each_latent_over_the_text(tiny, name, capsys):
    cell = ran(name, "search-text")
    live, atlas = tiny.live(name), tiny.atlas(name)
    args = ["search-text", "--model", str(tiny.folder(name)), "--sae", str(tiny.saes(name)), "--text", TEXT]
    unfiltered = ["--max-density", "1"]  # every latent, as the brute-force sums below
    capsys.readouterr()  # what building the atlas printed
    assert main([*args, "--atlas", str(atlas), *unfiltered, "--top", "5", "--device", "cpu", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    ids = tokens(live)
    with torch.no_grad():
        _, cache = live.model.run_with_cache(ids)
    with torch.no_grad():
        sums = {n: s.sae.encode(cache[s.hook_name][0, 1:]).sum(0) for n, s in live.saes.items()}
    best = sorted(((float(v), n, i) for n, row in sums.items() for i, v in enumerate(row)), reverse=True)[:5]
    assert [(h["sae"], h["latent"]) for h in hits] == [(n, i) for _, n, i in best]
    assert [h["score"] for h in hits] == pytest.approx([v for v, _, _ in best], rel=1e-4)
    _passed.add(cell)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_graph_replacement_logits_and_edges_equal_a_frozen_intervention(tiny, name):
    cell = ran(name, "graph")
    from analysis.graphs import GraphSettings, compute_graph, replacement_model

    live = tiny.live(name)
    ids = tokens(live)
    model = replacement_model(live)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), live.model(ids), atol=1e-5, rtol=0)
    graph = compute_graph(live, TEXT, settings=GraphSettings(max_feature_nodes=64)).graph
    assert_edges_equal_a_frozen_intervention(model, graph)
    _passed.add(cell)


def test_the_committed_support_matrix_says_what_this_run_found():
    """Last in the module: README's table is docs/support_matrix.md, which is a rendering of cells
    (not typed by hand), and says "yes" exactly where this run's tests passed (of those that ran)."""
    table = MATRIX_FILE.read_text()
    assert embedded((REPO_ROOT / "README.md").read_text()) == table
    committed = cells(table)
    assert set(committed) == {(name, capability) for name in ARCHITECTURES for capability in CAPABILITIES}
    passed = [cell for cell, yes in committed.items() if yes]
    assert table == render(results() | {"passed": passed})
    wrong = sorted(cell for cell in _ran if committed[cell] != (cell in _passed))
    assert not wrong, f"docs/support_matrix.md disagrees with this run for {wrong}: regenerate it (see README)"
