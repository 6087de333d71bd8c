"""How much memory one precompute worker needs, from the shapes alone, before anything is loaded.

    worker memory = running state per latent × latents held  (FeatureStats, exact)
                  + per batch token × batch tokens           (the SAE side of one batch, derived)
                  + per shard token × shard tokens           (latent-range shards only: per-token L0)

The running state is fixed by ``FeatureStats``' shapes: the top-K windows and the interval samples
with their whole windows of activations dominate. A batch holds the hooked activations of the
model (float32, d_in per hooked layer) and, for the SAE being encoded (one at a time), the
encoder's temporaries over the latents it encodes (its range, or every latent for a top-k SAE)
and the per-window maxima of the top-K update. The model's weights and its own forward pass, the
SAEs' weights and the sparse entries of the firing latents (about 40 bytes each) come on top and
are not part of this estimate. ``tests/test_memory_estimate.py`` checks the state term against
the tensors a real demo run holds and the batch term against the peak of the tensors one batch
allocates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from analysis.atlas.feature_stats import HIST_BINS, INTERVAL_SAMPLES, LOG_BINS, N_INTERVALS
from analysis.atlas.latent_range import SLICEABLE, latent_range
from analysis.atlas.run_config import PrecomputeError
from analysis.preflight import SAE_CONFIG, sae_folders

# Encoder temporaries per encoded latent per token at the encoder's peak, as sae-lens computes it
# (float32 each; the matmul's output and a boolean mask are freed before the peak). JumpReLU: the
# pre-activations, the ReLU's output, the threshold mask as float and their product (measured on the
# demo, tests/test_memory_estimate.py). Standard: pre-activations and ReLU output. Gated: its gate
# and magnitude pre-activations, mask, magnitudes and product (derived from the code, not measured).
# Others (top-k) encode every latent: pre-activations and the activations they scatter into.
ENCODE_BYTES = {"jumprelu": 16, "jumprelu_transcoder": 16, "gated": 20}
DEFAULT_ENCODE_BYTES = 8


def state_bytes_per_latent(top_k: int, context: int) -> int:
    """Bytes of ``FeatureStats`` running state per latent (one SAE's state is this × d_sae + 8).

    Per latent: fire count, sum, max, range exponent, one L0 bin (8+8+4+4+8); the linear, log and
    interval histograms (int64); the top-K windows (value f32, window and position int64, the
    window's activations f32); and ``N_INTERVALS × INTERVAL_SAMPLES`` samples (key and token int64,
    value f32, the window's activations f16).
    """
    scalars = 8 + 8 + 4 + 4 + 8
    histograms = 8 * (HIST_BINS + LOG_BINS + N_INTERVALS)
    top = top_k * (4 + 8 + 8 + 4 * context)
    samples = N_INTERVALS * INTERVAL_SAMPLES * (8 + 8 + 4 + 2 * context)
    return scalars + histograms + top + samples


def state_bytes(d_sae: int, top_k: int, context: int) -> int:
    """Bytes of one SAE's ``FeatureStats`` (L0 histogram has d_sae + 1 bins)."""
    return d_sae * state_bytes_per_latent(top_k, context) + 8


@dataclass(frozen=True)
class SAEShape:
    """What the estimate needs of one SAE, and the latents ``[first, end)`` the worker holds."""

    hook: str
    d_in: int
    d_sae: int
    architecture: str
    first: int = 0
    end: int | None = None  # None: every latent

    @property
    def held(self) -> int:
        return (self.d_sae if self.end is None else self.end) - self.first

    @property
    def encoded(self) -> int:
        """Latents encoded per token: the range where the encoder slices, else all (top-k)."""
        return self.held if self.architecture in SLICEABLE else self.d_sae

    @property
    def encode_bytes(self) -> int:
        return ENCODE_BYTES.get(self.architecture, DEFAULT_ENCODE_BYTES) * self.encoded


def batch_bytes_per_token(saes: list[SAEShape], context: int) -> int:
    """Bytes per token of a batch: the hooked activations (float32 × d_in of each hooked layer, once
    per hook), and for the SAE that needs most (they are encoded one at a time) the encoder's
    temporaries over the latents it encodes and the per-window maxima of the top-K update."""
    hooks = {sae.hook: sae.d_in for sae in saes}
    widest = max(saes, key=lambda sae: sae.encode_bytes)
    return 4 * sum(hooks.values()) + widest.encode_bytes + math.ceil(4 * widest.encoded / context)


@dataclass(frozen=True)
class WorkerMemory:
    """One worker's estimate, term by term (bytes)."""

    per_latent: int
    latents: int
    per_batch_token: int
    batch_tokens: int
    per_shard_token: int
    shard_tokens: int
    saes: int

    @property
    def state(self) -> int:
        return self.per_latent * self.latents + 8 * self.saes

    @property
    def batch(self) -> int:
        return self.per_batch_token * self.batch_tokens

    @property
    def token_l0(self) -> int:
        return self.per_shard_token * self.shard_tokens

    @property
    def total(self) -> int:
        return self.state + self.batch + self.token_l0

    def line(self) -> str:
        """The one line precompute prints when it starts."""
        l0 = (
            f" + {self.per_shard_token:,} B per shard token × {self.shard_tokens:,} (per-token L0)"
            if self.per_shard_token
            else ""
        )
        return (
            f"worker memory ≈ {self.total / 2**20:,.1f} MiB: {self.per_latent:,} B per latent × "
            f"{self.latents:,} latents + {self.per_batch_token:,} B per batch token × {self.batch_tokens:,}{l0} "
            "(model and SAE weights and the model's forward pass on top)"
        )


def worker_memory(
    saes: list[SAEShape], top_k: int, context: int, batch_windows: int, shard_windows: int, latent_shards: int = 1
) -> WorkerMemory:
    """The estimate for a worker holding the given latents of each SAE over ``shard_windows``
    windows, ``batch_windows`` at a time, as one of ``latent_shards`` latent ranges."""
    return WorkerMemory(
        per_latent=state_bytes_per_latent(top_k, context),
        latents=sum(sae.held for sae in saes),
        per_batch_token=batch_bytes_per_token(saes, context),
        batch_tokens=batch_windows * context,
        per_shard_token=4 * len(saes) if latent_shards > 1 else 0,
        shard_tokens=shard_windows * context,
        saes=len(saes),
    )


def check_budget(memory: WorkerMemory, budget: int | None) -> None:
    """Refuse a run whose estimate is over ``--max-worker-memory``, saying what would bring it under."""
    if budget is None or memory.total <= budget:
        return
    raise PrecomputeError(
        f"{memory.line()} is over --max-worker-memory {budget / 2**20:,.1f} MiB: split the latents "
        "(--latent-shard j/m, or --latent-shards m with --ray), lower --batch, or raise the budget"
    )


def local_sae_shapes(specs: tuple[str, ...] | list[str], latent_shard: tuple[int, int]) -> list[SAEShape] | None:
    """The shapes of the SAEs in local folders (their cfg.json, no weights), holding latent range
    ``latent_shard``; None when a spec is a sae-lens release or a circuit-tracer transcoder set
    (known once a worker loads it, which then checks the budget itself)."""
    shapes = []
    for spec in specs:
        folders = sae_folders(spec)
        if not folders:  # a release, or a circuit-tracer transcoder set (its shapes are in its weights)
            return None
        for folder in folders:
            cfg = json.loads((folder / SAE_CONFIG).read_text(encoding="utf-8"))  # preflight read it already
            d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
            if not (isinstance(d_in, int) and isinstance(d_sae, int)):
                return None  # the worker's loader says what is wrong with it
            hook = cfg.get("hook_name") or cfg.get("metadata", {}).get("hook_name", "")
            architecture = cfg.get("architecture", "standard")
            shapes.append(SAEShape(hook, d_in, d_sae, architecture, *latent_range(d_sae, latent_shard)))
    return shapes
