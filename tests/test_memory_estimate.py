"""The worker memory precompute states when it starts (``memory_estimate.worker_memory``), held against
what a real demo run allocates: the running state byte for byte, one batch's SAE side within 10%."""

from __future__ import annotations

import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from analysis.atlas.precompute import Precompute, PrecomputeConfig, sae_activations
from analysis.hooked_forward import run_to_hooks
from analysis.paths import DEMO_DIR
from tests.cli_run import cli_in_process

pytestmark = pytest.mark.model

# a JumpReLU SAE of 1,024 latents and a JumpReLU transcoder of 2,048, on different layers
SAES = (str(DEMO_DIR / "saes" / "resid-L2"), str(DEMO_DIR / "saes" / "transcoder-L1"))
WINDOWS = 8


class PeakTensorBytes(TorchDispatchMode):
    """The most bytes of tensor storage allocated inside the block and alive at once: every aten op's
    new outputs counted once per storage (views and in-place results of older tensors are not new)
    and released when the last tensor on that storage is freed."""

    def __init__(self) -> None:
        super().__init__()
        self.tensors: dict[int, int] = {}  # storage -> live tensors on it
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def _release(self, storage: int) -> None:
        self.tensors[storage] -= 1
        if self.tensors[storage] == 0:
            del self.tensors[storage]
            self.live -= self.sizes.pop(storage)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)
        }
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or (key in inputs and key not in self.tensors):
                continue  # empty, or a view / in-place result of a tensor from before the block
            if key not in self.tensors:
                self.tensors[key], self.sizes[key] = 0, storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self.tensors[key] += 1
            weakref.finalize(tensor, self._release, key)
        return out


def job(latent_shard: tuple[int, int], tmp_path: Path) -> Precompute:
    return Precompute(
        PrecomputeConfig(
            model=str(DEMO_DIR / "model"),
            saes=SAES,
            corpus="demo",
            tokens=WINDOWS * 128,
            out=tmp_path / "atlas.duckdb",
            batch_windows=WINDOWS,
            latent_shard=latent_shard,
        )
    )


def held_bytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.untyped_storage().nbytes() for t in tensors)


def test_the_state_term_is_what_a_latent_range_worker_holds_and_halves_with_the_range(tmp_path):
    state_bytes = {}
    for shards in (2, 4):
        run = job((1, shards), tmp_path)
        state = run.stream()
        stats = held_bytes([t for s in state.stats for t in s.tensors().values()])
        assert state.token_l0 is not None
        assert stats == run.memory.state and held_bytes(state.token_l0) == run.memory.token_l0
        assert run.memory.per_latent == 39_936 and run.memory.latents == 3072 // shards
        state_bytes[shards] = stats
    assert 1.99 < state_bytes[2] / state_bytes[4] < 2.01  # half the range, half the state


@torch.no_grad()
def test_the_batch_term_is_the_peak_of_one_batch_within_ten_percent(tmp_path):
    """The model's forward runs outside the measured block (its own pass is not in the estimate); its
    hooked activations are measured as the forward leaves them; then each SAE is encoded and counted."""
    ratios = {}
    for shards in (2, 4):
        run = job((1, shards), tmp_path)
        state = run._fresh_state("measured")
        ids = run.window_ids[:WINDOWS]
        tokens = run.corpus.windows(ids, run.config.context, run.bos_id)
        for _ in range(2):  # the first batch also allocates lazily initialised state
            cache_bytes = held_bytes(list(run_to_hooks(run.model, tokens, run.hooks).values()))
            counted, per_sae = sae_activations(run.model, run.saes, run.hooks, tokens, run.special, run.encoders)
            with PeakTensorBytes() as peak:
                run.count(state, ids, counted, per_sae)
            del per_sae
        ratios[shards] = (cache_bytes + peak.peak) / run.memory.batch
    assert all(0.9 < ratio < 1.1 for ratio in ratios.values()), ratios


def test_a_run_over_the_memory_budget_is_refused_before_the_model_loads(tmp_path, capsys):
    out = tmp_path / "atlas.duckdb"
    args = ("precompute", "--sae", SAES[1], "--tokens", "256", "--out", str(out), "--latent-shard", "0/2")
    result = cli_in_process(capsys, *args, "--max-worker-memory", "8MiB")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "worker memory ≈ 311.5 MiB: 39,936 B per latent × 1,024 latents + 17,440 B per batch token" in result.stderr
    assert "is over --max-worker-memory 8.0 MiB: split the latents" in result.stderr
    assert "; SAEs " not in result.stderr and not out.exists()  # refused before the model was loaded
    bad = cli_in_process(capsys, *args, "--max-worker-memory", "lots")
    assert bad.returncode == 2 and "--max-worker-memory must be a size such as 512MiB" in bad.stderr
