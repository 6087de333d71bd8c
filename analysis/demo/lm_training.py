"""Train the demo's GPT-2-architecture language model from scratch on the demo corpus.

Training is budgeted in wall-clock minutes (the bundle is rebuilt on whatever machine is at
hand), so the number of steps is fixed after timing the first few steps: the learning-rate
schedule is then an ordinary warmup + cosine over a known step count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from analysis.token_ids import special_token_id


@dataclass(frozen=True)
class LMSettings:
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    n_ctx: int = 256
    batch_size: int = 16
    peak_lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    minutes: float = 40.0
    seed: int = 0


def sample_windows(stream: np.ndarray, n: int, length: int, bos_id: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random windows of ``length`` tokens, each starting with BOS like a transformer-lens prompt."""
    starts = rng.integers(0, len(stream) - length, size=n)
    body = np.stack([stream[s : s + length - 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(np.concatenate([np.full((n, 1), bos_id), body], axis=1))


def heldout_windows(stream: np.ndarray, length: int, bos_id: int, limit: int) -> torch.Tensor:
    """Consecutive, non-overlapping held-out windows (deterministic, for evaluation)."""
    n = min(limit, len(stream) // (length - 1))
    body = stream[: n * (length - 1)].reshape(n, length - 1).astype(np.int64)
    return torch.from_numpy(np.concatenate([np.full((n, 1), bos_id), body], axis=1))


@torch.no_grad()
def mean_loss(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over all predicted positions of ``windows``."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        logits = model(batch).logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += loss.item()
        count += batch[:, 1:].numel()
    model.train()
    return total / count


def unigram_loss(train: np.ndarray, heldout: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy of held-out tokens under add-one-smoothed training unigram frequencies."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[heldout].mean())


def train_language_model(
    tokenizer: PreTrainedTokenizerFast,
    train_stream: np.ndarray,
    heldout_stream: np.ndarray,
    out_dir: Path,
    settings: LMSettings,
) -> dict:
    """Train, save with ``save_pretrained`` and return the measured numbers for the bundle report."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=settings.n_ctx,
        n_ctx=settings.n_ctx,  # transformer-lens reads the context length from n_ctx
        n_embd=settings.d_model,
        n_layer=settings.n_layer,
        n_head=settings.n_head,
        bos_token_id=special_token_id(tokenizer, "bos"),
        eos_token_id=special_token_id(tokenizer, "eos"),
        pad_token_id=tokenizer.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPT2LMHeadModel(config).to(device)  # pyright: ignore[reportArgumentType]  (transformers' wrapper hides Module.to's signature)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.peak_lr,
        betas=(0.9, 0.95),
    )
    bos = special_token_id(tokenizer, "bos")

    def step(lr: float) -> float:
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sample_windows(train_stream, settings.batch_size, settings.n_ctx, bos, rng).to(device)
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    # Time a few warmup steps to turn the minute budget into a fixed step count.
    probe_steps = 10
    started = time.time()
    for i in range(probe_steps):
        step(settings.peak_lr * (i + 1) / settings.warmup_steps)
    seconds_per_step = (time.time() - started) / probe_steps
    total_steps = max(probe_steps + 1, int(settings.minutes * 60 / seconds_per_step))

    tokens_per_step = settings.batch_size * settings.n_ctx
    progress = tqdm(
        range(probe_steps, total_steps), desc="train LM", unit="step", initial=probe_steps, total=total_steps
    )
    loss = float("nan")
    for i in progress:
        if i < settings.warmup_steps:
            lr = settings.peak_lr * (i + 1) / settings.warmup_steps
        else:
            frac = (i - settings.warmup_steps) / max(1, total_steps - settings.warmup_steps)
            lr = settings.peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        loss = step(lr)
        progress.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_step / seconds_per_step:.0f}")
    train_seconds = time.time() - started

    model = model.float().cpu()
    eval_windows = heldout_windows(heldout_stream, settings.n_ctx, bos, limit=400)
    heldout = mean_loss(model, eval_windows)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "n_layer": settings.n_layer,
        "d_model": settings.d_model,
        "n_head": settings.n_head,
        "n_ctx": settings.n_ctx,
        "steps": total_steps,
        "tokens_seen": total_steps * tokens_per_step,
        "train_seconds": round(train_seconds, 1),
        "device": device,
        "final_train_loss": round(loss, 4),
        "heldout_loss": round(heldout, 4),
        "heldout_eval_tokens": int(eval_windows[:, 1:].numel()),
        "unigram_heldout_loss": round(unigram_loss(train_stream, heldout_stream, len(tokenizer)), 4),
    }
