"""Train the demo's SAEs and transcoders with sae-lens, from activations cached in one model pass.

sae-lens 6.54 trains SAEs but not transcoders, so a transcoder here is sae-lens's BatchTopK
training SAE (its trainer, optimiser, schedules, dead-latent tracking and AuxK loss) whose
reconstruction target is the MLP's output instead of its own input. Both kinds are saved in
sae-lens's disk format as JumpReLU models (a BatchTopK SAE's usual inference form), which sae-lens
loads with ``SAE.load_from_disk`` and circuit-tracer can use as per-layer transcoders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sae_lens import LoggingConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
from sae_lens.saes.sae import SAEMetadata, TrainStepInput, TrainStepOutput
from sae_lens.training.sae_trainer import SAETrainer
from tqdm import tqdm
from transformer_lens import HookedTransformer

from analysis.demo.lm_training import sample_windows


@dataclass(frozen=True)
class DictionarySpec:
    """One SAE (``hook_out`` None) or transcoder (reads ``hook_in``, predicts ``hook_out``) to train."""

    name: str
    hook_in: str
    hook_out: str | None
    d_sae: int = 2048
    k: int = 32
    lr: float | None = None  # None: TrainingSettings.lr


@dataclass(frozen=True)
class TrainingSettings:
    context: int = 128
    activation_tokens: int = 800_000
    training_tokens: int = 1_000_000
    batch_size: int = 4096
    lr: float = 1e-3
    seed: int = 0


def demo_dictionaries(n_layers: int) -> list[DictionarySpec]:
    """A transcoder per layer (MLP input -> MLP output) and a residual SAE at the middle layer.

    Layer 0's transcoder has 512 latents, a learning rate of 3e-3, and the residual SAE 1024
    latents: trained on the CPU budget of 1M samples, each kept more than 20% of its latents dead
    otherwise (measured on 260k held-out tokens: layer 0 at lr 1e-3 had 25% dead at 512, 1024 and
    2048 latents, and still 25% with 3M samples; at lr 3e-3, 2%; the residual SAE at 2048, 25%).
    """
    middle = n_layers // 2
    specs = [
        DictionarySpec(f"transcoder-L{layer}", f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
        for layer in range(n_layers)
    ]
    specs[0] = DictionarySpec(specs[0].name, specs[0].hook_in, specs[0].hook_out, d_sae=512, lr=3e-3)
    return specs + [DictionarySpec(f"resid-L{middle}", f"blocks.{middle}.hook_resid_pre", None, d_sae=1024)]


def context_windows(stream: np.ndarray, n_windows: int, context: int, bos_id: int, seed: int) -> torch.Tensor:
    """``n_windows`` random windows of ``context`` tokens from ``stream``, each beginning with BOS."""
    return sample_windows(stream, n_windows, context, bos_id, np.random.default_rng(seed))


@torch.no_grad()
def collect_activations(
    model: HookedTransformer, windows: torch.Tensor, hooks: list[str], special_ids: list[int], batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Activations at ``hooks`` for every non-special token of ``windows``, as float16 [tokens, d]."""
    last_layer = max(int(hook.split(".")[1]) for hook in hooks)
    gathered: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    special = torch.tensor(special_ids)
    for start in tqdm(range(0, len(windows), batch_size), desc="cache activations", unit="batch"):
        tokens = windows[start : start + batch_size].to(model.cfg.device)
        keep = ~torch.isin(tokens, special.to(tokens.device))
        _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=last_layer + 1)
        for hook in hooks:
            gathered[hook].append(cache[hook][keep].to(torch.float16).cpu())
    return {hook: torch.cat(parts) for hook, parts in gathered.items()}


class BatchTopKTrainingTranscoder(BatchTopKTrainingSAE):
    """sae-lens's BatchTopK training SAE, reconstructing a target that is not its input.

    Each training batch is ``[input | target]`` concatenated on the last dimension, so sae-lens's
    trainer can drive it unchanged.
    """

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        sae_in, target = step_input.sae_in.split(self.cfg.d_in, dim=-1)
        feature_acts, hidden_pre = self.encode_with_hidden_pre(sae_in)
        sae_out = self.decode(feature_acts)
        mse_loss = self.mse_loss_fn(sae_out, target).sum(dim=-1).mean()
        aux_loss = self.calculate_topk_aux_loss(
            sae_in=target, sae_out=sae_out, hidden_pre=hidden_pre, dead_neuron_mask=step_input.dead_neuron_mask
        )
        self.update_topk_threshold(feature_acts)
        return TrainStepOutput(
            sae_in=target,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + self.cfg.aux_loss_coefficient * aux_loss,
            losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss},
            metrics={"topk_threshold": self.topk_threshold},
        )


def _batches(data: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled float32 batches from the cached rows."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield data[order[start : start + batch_size]].float()


def train_dictionary(
    spec: DictionarySpec,
    activations: dict[str, torch.Tensor],
    model_name: str,
    out_dir: Path,
    settings: TrainingSettings,
) -> Path:
    """Train one SAE or transcoder and save it in sae-lens's disk format under ``out_dir / spec.name``."""
    torch.manual_seed(settings.seed)
    x = activations[spec.hook_in]
    d_in = x.shape[1]
    hook_out = spec.hook_out
    is_transcoder = hook_out is not None
    metadata = SAEMetadata(
        model_name=model_name,
        hook_name=spec.hook_in,
        context_size=settings.context,
        prepend_bos=True,
    )
    if is_transcoder:
        metadata.hook_name_out = spec.hook_out
    cfg = BatchTopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=spec.d_sae,
        k=spec.k,
        apply_b_dec_to_input=not is_transcoder,
        device="cpu",
        metadata=metadata,
    )
    sae_class = BatchTopKTrainingTranscoder if is_transcoder else BatchTopKTrainingSAE
    sae = sae_class(cfg)
    data = torch.cat([x, activations[hook_out]], dim=1) if hook_out is not None else x
    steps = settings.training_tokens // settings.batch_size
    lr = spec.lr or settings.lr
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * settings.batch_size,
        train_batch_size_samples=settings.batch_size,
        lr=lr,
        lr_end=lr / 10,
        lr_warm_up_steps=max(1, steps // 20),
        lr_decay_steps=steps // 4,
        device="cpu",
        dead_feature_window=50,
        feature_sampling_window=100,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=_batches(data, settings.batch_size, settings.seed))
    trainer.fit()
    target = out_dir / spec.name
    sae.save_inference_model(target)
    if is_transcoder:
        _mark_as_transcoder(target / "cfg.json", d_out=activations[hook_out].shape[1])
    return target


def _mark_as_transcoder(cfg_path: Path, d_out: int) -> None:
    """Rewrite a saved JumpReLU SAE config as sae-lens's JumpReLU transcoder config."""
    config = json.loads(cfg_path.read_text())
    config.update(architecture="jumprelu_transcoder", d_out=d_out, apply_b_dec_to_input=False)
    cfg_path.write_text(json.dumps(config, indent=2))
