"""The quality numbers the field reports for an SAE or transcoder, measured on real model activations.

mean L0, explained variance, CE loss recovered ((CE_zero_ablation - CE_with_SAE) /
(CE_zero_ablation - CE_clean)), dead (never fired) and dense (> 10% of tokens) latent counts.
Special tokens (BOS/EOS/pad) are left out of every per-token statistic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from transformer_lens import HookedTransformer

from analysis.sae_loading import LoadedSAE

DENSE_FRACTION = 0.1


@dataclass
class SAEQuality:
    name: str
    d_sae: int
    tokens: int
    ce_tokens: int
    mean_l0: float
    explained_variance: float
    ce_loss_clean: float
    ce_loss_with_sae: float
    ce_loss_zero_ablation: float
    ce_loss_recovered: float
    dead: int
    dense: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class QualitySums:
    """Additive sums behind one SAE's quality numbers: batches and shards combine by ``+``."""

    d_sae: int
    fired: torch.Tensor | None = None  # [d_sae] tokens on which each latent fired
    tokens: int = 0
    l0_sum: float = 0.0
    residual_sq: float = 0.0
    target_sum: torch.Tensor | None = None  # [d_out]
    target_sq_sum: float = 0.0
    ce_sums: dict[str, float] = field(default_factory=lambda: {"clean": 0.0, "sae": 0.0, "zero": 0.0})
    ce_predictions: int = 0
    ce_tokens: int = 0

    def add_tokens(self, acts: torch.Tensor, target: torch.Tensor, reconstruction: torch.Tensor) -> None:
        active = acts > 0
        fired = active.sum(0).cpu()
        self.fired = fired if self.fired is None else self.fired + fired
        self.l0_sum += active.sum().item()
        self.tokens += acts.shape[0]
        self.residual_sq += (target - reconstruction).pow(2).sum().item()
        target_sum = target.double().sum(0).cpu()
        self.target_sum = target_sum if self.target_sum is None else self.target_sum + target_sum
        self.target_sq_sum += target.double().pow(2).sum().item()

    def __add__(self, other: QualitySums) -> QualitySums:
        def plus(a, b):
            return b if a is None else a if b is None else a + b

        return QualitySums(
            d_sae=self.d_sae,
            fired=plus(self.fired, other.fired),
            tokens=self.tokens + other.tokens,
            l0_sum=self.l0_sum + other.l0_sum,
            residual_sq=self.residual_sq + other.residual_sq,
            target_sum=plus(self.target_sum, other.target_sum),
            target_sq_sum=self.target_sq_sum + other.target_sq_sum,
            ce_sums={k: v + other.ce_sums[k] for k, v in self.ce_sums.items()},
            ce_predictions=self.ce_predictions + other.ce_predictions,
            ce_tokens=self.ce_tokens + other.ce_tokens,
        )

    def explained_variance(self) -> float:
        assert self.target_sum is not None, "no tokens added yet"
        mean = self.target_sum / self.tokens
        total_variance = self.target_sq_sum - self.tokens * float(mean.pow(2).sum())
        return 1.0 - self.residual_sq / total_variance

    def result(self, name: str) -> SAEQuality:
        assert self.fired is not None, "no tokens added yet"
        ce = {key: value / self.ce_predictions for key, value in self.ce_sums.items()}
        return SAEQuality(
            name=name,
            d_sae=self.d_sae,
            tokens=self.tokens,
            ce_tokens=self.ce_tokens,
            mean_l0=self.l0_sum / self.tokens,
            explained_variance=self.explained_variance(),
            ce_loss_clean=ce["clean"],
            ce_loss_with_sae=ce["sae"],
            ce_loss_zero_ablation=ce["zero"],
            ce_loss_recovered=(ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
            dead=int((self.fired == 0).sum()),
            dense=int((self.fired > DENSE_FRACTION * self.tokens).sum()),
        )


def _splice_hooks(loaded: LoadedSAE, replacement: str) -> list[tuple[str | Callable, Callable]]:
    """Forward hooks that replace the SAE's output hook with its reconstruction (or zeros)."""
    write_hook = loaded.hook_name_out or loaded.hook_name
    captured: dict[str, torch.Tensor] = {}

    def capture(activation: torch.Tensor, hook) -> torch.Tensor:
        captured["input"] = activation
        return activation

    def replace(activation: torch.Tensor, hook) -> torch.Tensor:
        if replacement == "zero":
            return torch.zeros_like(activation)
        source = captured["input"] if loaded.is_transcoder else activation
        return loaded.sae.decode(loaded.sae.encode(source)).to(activation.dtype)

    hooks: list[tuple[str | Callable, Callable]] = [(write_hook, replace)]
    if loaded.is_transcoder and replacement != "zero":
        hooks.insert(0, (loaded.hook_name, capture))
    return hooks


def _block_of(hook_name: str) -> int | None:
    match = re.match(r"blocks\.(\d+)\.", hook_name)
    return int(match.group(1)) if match else None


def _spliced_loss(model: HookedTransformer, tokens: torch.Tensor, cache, loaded: LoadedSAE, kind: str) -> torch.Tensor:
    """Per-token loss with the SAE's output hook spliced; starts at the SAE's block (the layers
    before it are the clean pass's, already in ``cache``) instead of re-running the whole model."""
    block = _block_of(loaded.hook_name)
    if block is None:
        return model.run_with_hooks(
            tokens, return_type="loss", loss_per_token=True, fwd_hooks=_splice_hooks(loaded, kind)
        )
    return model.run_with_hooks(
        cache[f"blocks.{block}.hook_resid_pre"],
        start_at_layer=block,
        tokens=tokens,
        return_type="loss",
        loss_per_token=True,
        fwd_hooks=_splice_hooks(loaded, kind),
    )


@torch.no_grad()
def measure_batch(
    model: HookedTransformer,
    saes: list[LoadedSAE],
    tokens: torch.Tensor,
    special: torch.Tensor,
    sums: list[QualitySums],
    with_ce: bool,
) -> None:
    """Add one batch of windows ([n, context], each starting with BOS) to every SAE's sums."""
    hooks = sorted(
        {s.hook_name for s in saes}
        | {s.hook_name_out for s in saes if s.hook_name_out is not None}
        | {f"blocks.{b}.hook_resid_pre" for s in saes if (b := _block_of(s.hook_name)) is not None}
    )
    keep = ~torch.isin(tokens, special)
    clean_loss, cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True, names_filter=hooks)
    assert isinstance(clean_loss, torch.Tensor)
    for loaded, acc in zip(saes, sums):
        source = cache[loaded.hook_name][keep]
        target = cache[loaded.hook_name_out][keep] if loaded.is_transcoder else source
        acts = loaded.sae.encode(source)
        acc.add_tokens(acts, target, loaded.sae.decode(acts))
        if not with_ce:
            continue
        acc.ce_sums["clean"] += clean_loss.sum().item()
        for kind in ("sae", "zero"):
            acc.ce_sums[kind] += _spliced_loss(model, tokens, cache, loaded, kind).sum().item()
        acc.ce_predictions += clean_loss.numel()
        acc.ce_tokens += int(keep.sum())


def evaluate_saes(
    model: HookedTransformer,
    saes: list[LoadedSAE],
    windows: torch.Tensor,
    special_ids: list[int],
    batch_size: int = 32,
    ce_windows: int | None = None,
) -> list[SAEQuality]:
    """Measure every SAE in ``saes`` on the token ``windows`` ([n, context], each starting with BOS).

    Firing statistics use every window (dead latents need many tokens to tell apart from rare ones);
    CE losses, which cost two extra forward passes per SAE, use only the first ``ce_windows``.
    """
    sums = [QualitySums(s.d_sae) for s in saes]
    special = torch.tensor(special_ids, device=model.cfg.device)
    for start in range(0, len(windows), batch_size):
        tokens = windows[start : start + batch_size].to(model.cfg.device)
        measure_batch(model, saes, tokens, special, sums, with_ce=ce_windows is None or start < ce_windows)
    return [acc.result(loaded.name) for loaded, acc in zip(saes, sums)]
