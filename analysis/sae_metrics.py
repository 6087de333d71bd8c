"""The quality numbers the field reports for an SAE or transcoder, measured on real model activations.

mean L0, explained variance, CE loss recovered ((CE_zero_ablation - CE_with_SAE) /
(CE_zero_ablation - CE_clean)), dead (never fired) and dense (> 10% of tokens) latent counts.
Special tokens (BOS/EOS/pad) are left out of every per-token statistic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

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


class _Accumulator:
    """Running sums for one SAE over token batches."""

    def __init__(self, d_sae: int) -> None:
        self.fired = torch.zeros(d_sae, dtype=torch.long)
        self.l0_sum = 0.0
        self.tokens = 0
        self.residual_sq = 0.0
        self.target_sum: torch.Tensor | float = 0.0
        self.target_sq_sum = 0.0
        self.ce = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
        self.ce_batches = 0
        self.ce_tokens = 0

    def add_tokens(self, acts: torch.Tensor, target: torch.Tensor, reconstruction: torch.Tensor) -> None:
        active = acts > 0
        self.fired += active.sum(0).cpu()
        self.l0_sum += active.sum().item()
        self.tokens += acts.shape[0]
        self.residual_sq += (target - reconstruction).pow(2).sum().item()
        self.target_sum = self.target_sum + target.sum(0)
        self.target_sq_sum += target.pow(2).sum().item()

    def result(self, name: str) -> SAEQuality:
        mean = self.target_sum / self.tokens
        total_variance = self.target_sq_sum - self.tokens * float(mean.pow(2).sum())
        ce = {key: value / self.ce_batches for key, value in self.ce.items()}
        return SAEQuality(
            name=name,
            d_sae=len(self.fired),
            tokens=self.tokens,
            ce_tokens=self.ce_tokens,
            mean_l0=self.l0_sum / self.tokens,
            explained_variance=1.0 - self.residual_sq / total_variance,
            ce_loss_clean=ce["clean"],
            ce_loss_with_sae=ce["sae"],
            ce_loss_zero_ablation=ce["zero"],
            ce_loss_recovered=(ce["zero"] - ce["sae"]) / (ce["zero"] - ce["clean"]),
            dead=int((self.fired == 0).sum()),
            dense=int((self.fired > DENSE_FRACTION * self.tokens).sum()),
        )


def _splice_hooks(loaded: LoadedSAE, replacement: str) -> list[tuple[str, object]]:
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

    hooks: list[tuple[str, object]] = [(write_hook, replace)]
    if loaded.is_transcoder and replacement != "zero":
        hooks.insert(0, (loaded.hook_name, capture))
    return hooks


@torch.no_grad()
def evaluate_saes(
    model: HookedTransformer, saes: list[LoadedSAE], windows: torch.Tensor, special_ids: list[int],
    batch_size: int = 32, ce_windows: int | None = None,
) -> list[SAEQuality]:
    """Measure every SAE in ``saes`` on the token ``windows`` ([n, context], each starting with BOS).

    Firing statistics use every window (dead latents need many tokens to tell apart from rare ones);
    CE losses, which cost two extra forward passes per SAE, use only the first ``ce_windows``.
    """
    hooks = sorted({s.hook_name for s in saes} | {s.hook_name_out for s in saes if s.is_transcoder})
    accumulators = [_Accumulator(s.d_sae) for s in saes]
    device = model.cfg.device
    special = torch.tensor(special_ids, device=device)
    for start in range(0, len(windows), batch_size):
        tokens = windows[start : start + batch_size].to(device)
        keep = ~torch.isin(tokens, special)
        clean_loss, cache = model.run_with_cache(tokens, return_type="loss", names_filter=hooks)
        for loaded, acc in zip(saes, accumulators):
            source = cache[loaded.hook_name][keep]
            target = cache[loaded.hook_name_out][keep] if loaded.is_transcoder else source
            acts = loaded.sae.encode(source)
            acc.add_tokens(acts, target, loaded.sae.decode(acts))
            if ce_windows is not None and start >= ce_windows:
                continue
            acc.ce["clean"] += clean_loss.item()
            for kind in ("sae", "zero"):
                loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=_splice_hooks(loaded, kind))
                acc.ce[kind] += loss.item()
            acc.ce_batches += 1
            acc.ce_tokens += int(keep.sum())
    return [acc.result(loaded.name) for loaded, acc in zip(saes, accumulators)]
