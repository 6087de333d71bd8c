"""``python -m analysis precompute``: one pass of a corpus through a model and its SAEs into an atlas.

Per batch of windows: one forward pass of the model up to the last hooked layer, every SAE
encoded from that pass's cache, each SAE's ``FeatureStats`` updated with tensor operations. About
``quality_windows`` windows spread evenly over the run (at most one in ``MIN_QUALITY_STRIDE``) are
also measured for explained variance and CE loss recovered: those cost extra forward passes, and a
fixed sample estimates them as well on a billion tokens as on a million. The running state is checkpointed
atomically every few minutes; ``--resume`` continues from it. ``--shard i/n`` processes a
deterministic slice of the windows and writes a partial atlas that ``merge`` combines.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from analysis.atlas.corpus_source import CorpusTokens, load_corpus
from analysis.atlas.feature_stats import FeatureStats
from analysis.atlas.store import AtlasContent, AtlasWriteError, SAEResult, write_atlas
from analysis.atlas.weight_stats import logit_effects, nearest_latents, residual_directions
from analysis.content_hash import model_hash, sae_hash
from analysis.hooked_forward import run_to_hooks
from analysis.model_loading import LoadedModel, load_model
from analysis.paths import REPO_ROOT
from analysis.sae_loading import LoadedSAE, check_fits, load_saes
from analysis.sae_metrics import QualitySums, measure_batch

MIN_QUALITY_STRIDE = 100


class PrecomputeError(ValueError):
    """Bad precompute input, reported as one line."""


@dataclass(frozen=True)
class PrecomputeConfig:
    model: str
    saes: tuple[str, ...]
    corpus: str
    tokens: int
    out: Path
    context: int = 128
    top_k: int = 20
    seed: int = 0
    batch_windows: int = 128  # halved on out-of-memory
    device: str | None = None
    shard: tuple[int, int] = (0, 1)
    quality_windows: int = 64
    checkpoint_seconds: float = 300.0
    overwrite: bool = False
    resume: bool = False


@dataclass
class RunState:
    """What a checkpoint holds: enough to continue the pass exactly where it stopped."""

    fingerprint: str
    done: int
    stats: list[FeatureStats]
    quality: list[QualitySums]
    token_counts: torch.Tensor
    seconds: float = 0.0
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise PrecomputeError(f"--shard must be i/n with 0 <= i < n, not {text!r}")
    return int(match[1]), int(match[2])


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "sae-lens", "transformer-lens", "transformers", "duckdb")}


def portable_spec(spec: str) -> str:
    """A model/SAE spec as the atlas records it: a folder inside this repository relative to its
    root (so the committed demo atlas names the demo bundle wherever the repository is cloned),
    anything else as given."""
    path = Path(spec).expanduser()
    if path.exists() and path.resolve().is_relative_to(REPO_ROOT):
        return str(path.resolve().relative_to(REPO_ROOT))
    return spec


def _sae_info(loaded: LoadedSAE) -> dict:
    return {
        "name": loaded.name,
        "spec": portable_spec(loaded.spec),
        "hook_name": loaded.hook_name,
        "hook_name_out": loaded.hook_name_out,
        "architecture": loaded.architecture,
        "is_transcoder": loaded.is_transcoder,
        "d_in": loaded.sae.cfg.d_in,
        "d_sae": loaded.d_sae,
        "content_hash": sae_hash(loaded),
    }


class Precompute:
    """One configured run: load, stream, checkpoint, finish."""

    def __init__(self, config: PrecomputeConfig) -> None:
        self.config = config
        self._check_arguments()
        self.loaded: LoadedModel = load_model(config.model, device=config.device)
        self.model = self.loaded.model
        self.saes: list[LoadedSAE] = [s for spec in config.saes for s in load_saes(spec, device=self.loaded.device)]
        check_fits(self.model, self.saes)
        names = [s.name for s in self.saes]
        if len(set(names)) != len(names):
            raise PrecomputeError(f"two SAEs share a name ({names}); give each a distinct folder name")
        tokenizer = self.model.tokenizer
        self.corpus: CorpusTokens = load_corpus(config.corpus, tokenizer)
        self.bos_id = tokenizer.bos_token_id
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=self.loaded.device)
        available = self.corpus.n_windows(config.context)
        if available == 0:
            raise PrecomputeError(
                f"corpus {config.corpus!r} has {len(self.corpus.stream)} tokens: "
                f"fewer than one window of {config.context}"
            )
        self.total_windows = min(available, math.ceil(config.tokens / config.context))
        index, count = config.shard
        self.window_ids = np.arange(self.total_windows)[
            index * self.total_windows // count : (index + 1) * self.total_windows // count
        ]
        self.quality_stride = max(MIN_QUALITY_STRIDE, math.ceil(self.total_windows / max(1, config.quality_windows)))
        self.hooks = sorted({s.hook_name for s in self.saes})
        self.checkpoint_path = config.out.with_name(config.out.name + ".checkpoint")
        self.checkpointed_windows = -1  # windows done in the checkpoint on disk (-1: none of this run)

    def _check_arguments(self) -> None:
        config = self.config
        if config.tokens <= 0:
            raise PrecomputeError("--tokens must be a positive number of tokens")
        if config.context < 2:
            raise PrecomputeError("--context must be at least 2 (BOS and one token)")
        if config.out.exists() and not (config.overwrite or config.resume):
            raise PrecomputeError(f"{config.out} exists; pass --overwrite to replace it")
        if not config.out.parent.is_dir():
            raise PrecomputeError(f"output folder {config.out.parent} does not exist")

    def run_description(self) -> dict:
        config = self.config
        return {
            "model": {
                "spec": portable_spec(config.model),
                "architecture": self.loaded.architecture,
                "content_hash": model_hash(self.model),
            },
            "saes": [_sae_info(s) for s in self.saes],
            "corpus": {
                "spec": config.corpus,
                "content_hash": self.corpus.content_hash,
                "tokens": int(len(self.corpus.stream)),
                "documents": len(self.corpus.doc_ids),
            },
            "context": config.context,
            "top_k": config.top_k,
            "seed": config.seed,
            "total_windows": self.total_windows,
            "quality_stride": self.quality_stride,
        }

    def _fresh_state(self, fingerprint: str) -> RunState:
        device = self.loaded.device
        return RunState(
            fingerprint=fingerprint,
            done=0,
            stats=[
                FeatureStats.empty(s.d_sae, self.config.top_k, self.config.context, self.config.seed * 1000 + i, device)
                for i, s in enumerate(self.saes)
            ],
            quality=[QualitySums(s.d_sae) for s in self.saes],
            token_counts=torch.zeros(self.model.cfg.d_vocab, dtype=torch.long, device=device),
        )

    def _load_checkpoint(self, fingerprint: str) -> RunState | None:
        if not self.config.resume or not self.checkpoint_path.exists():
            return None
        state: RunState = torch.load(self.checkpoint_path, weights_only=False)
        if state.fingerprint != fingerprint:
            raise PrecomputeError(
                f"{self.checkpoint_path} belongs to a run with other inputs; delete it or run without --resume"
            )
        state.stats = [s.to(self.loaded.device) for s in state.stats]
        state.token_counts = state.token_counts.to(self.loaded.device)
        self.checkpointed_windows = state.done
        return state

    def save_checkpoint(self, state: RunState) -> None:
        """Replace the checkpoint atomically; if that fails (disk full), the previous one is intact."""
        temporary = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        try:
            torch.save(state, temporary)
            os.replace(temporary, self.checkpoint_path)
            self.checkpointed_windows = state.done
        except (OSError, RuntimeError) as error:  # torch reports a failed write as a RuntimeError
            temporary.unlink(missing_ok=True)
            kept = "the previous checkpoint is intact" if self.checkpoint_path.exists() else "no checkpoint yet"
            raise PrecomputeError(
                f"could not write the checkpoint {self.checkpoint_path} ({kept}): {error}. "
                "Free some space and rerun with --resume"
            ) from error

    @torch.no_grad()
    def _process(self, state: RunState, ids: np.ndarray) -> None:
        tokens = self.corpus.windows(ids, self.config.context, self.bos_id).to(self.loaded.device)
        counted = ~torch.isin(tokens, self.special)
        cache = run_to_hooks(self.model, tokens, self.hooks)
        window_ids = torch.from_numpy(ids).to(self.loaded.device)
        for loaded, stats in zip(self.saes, state.stats):
            acts = loaded.sae.encode(cache[loaded.hook_name]).float()
            acts[~counted] = 0
            stats.update(acts, window_ids, counted)
        del cache
        state.token_counts += torch.bincount(tokens[counted], minlength=len(state.token_counts))
        sampled = torch.from_numpy(ids % self.quality_stride == 0)
        if sampled.any():
            measure_batch(
                self.model, self.saes, tokens[sampled.to(tokens.device)], self.special, state.quality, with_ce=True
            )

    def stream(self, on_progress: Callable[[int], None] | None = None) -> RunState:
        """Run the pass (or finish a checkpointed one), with progress, checkpointing as it goes.

        ``on_progress`` (a ``--ray`` shard's report to the cluster-wide bar) replaces the local bar
        and gets the windows done after each batch."""
        fingerprint = hashlib.sha256(
            json.dumps(
                self.run_description() | {"shard": self.config.shard, "tokens": self.config.tokens}, sort_keys=True
            ).encode()
        ).hexdigest()
        state = self._load_checkpoint(fingerprint) or self._fresh_state(fingerprint)
        batch = self.config.batch_windows
        context = self.config.context
        last_checkpoint = time.monotonic()
        with tqdm(
            total=len(self.window_ids) * context,
            initial=state.done * context,
            unit="tok",
            unit_scale=True,
            desc="precompute",
            smoothing=0.1,
            disable=on_progress is not None,
        ) as progress:
            while state.done < len(self.window_ids):
                ids = self.window_ids[state.done : state.done + batch]
                started = time.monotonic()
                try:
                    self._process(state, ids)
                except torch.OutOfMemoryError:
                    if batch == 1:
                        raise
                    batch = max(1, batch // 2)
                    torch.cuda.empty_cache()
                    progress.write(f"out of memory: batch lowered to {batch} windows")
                    continue
                state.done += len(ids)
                state.seconds += time.monotonic() - started
                progress.update(len(ids) * context)
                if on_progress is not None:
                    on_progress(state.done)
                if time.monotonic() - last_checkpoint > self.config.checkpoint_seconds and state.done < len(
                    self.window_ids
                ):
                    self.save_checkpoint(state)
                    last_checkpoint = time.monotonic()
        return state

    def finish(self, state: RunState) -> AtlasContent:
        """The atlas content: running statistics plus what the weights say about each latent."""
        directions = [residual_directions(self.model, s) for s in self.saes]
        neighbours = nearest_latents(directions) if any(d is not None for d in directions) else [{} for _ in self.saes]
        results = [
            SAEResult(
                info=_sae_info(loaded),
                stats=stats.to("cpu"),
                quality=quality,
                logits=logit_effects(self.model, direction) if direction is not None else None,
                neighbours=near,
            )
            for loaded, stats, quality, direction, near in zip(
                self.saes, state.stats, state.quality, directions, neighbours
            )
        ]
        tokenizer = self.model.tokenizer
        meta = self.run_description() | {
            "shards": [list(self.config.shard)],
            "windows": int(len(self.window_ids)),
            "tokens": int(len(self.window_ids) * self.config.context),
            "versions": _versions(),
            "started": state.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pass_seconds": state.seconds,
            "device": self.loaded.device,
        }
        return AtlasContent(
            meta=meta,
            corpus=self.corpus,
            bos_id=self.bos_id,
            token_text=[tokenizer.decode([i]) for i in range(self.model.cfg.d_vocab)],
            token_counts=state.token_counts.cpu().numpy(),
            saes=results,
        )


def run_precompute(config: PrecomputeConfig, on_progress: Callable[[int], None] | None = None) -> dict:
    """Build the atlas at ``config.out``; returns the summary printed at the end."""
    started = time.monotonic()
    job = Precompute(config)
    state = job.stream(on_progress)
    if job.checkpointed_windows != state.done:
        job.save_checkpoint(state)  # the pass is the expensive part: keep it until the atlas is on disk
    content = job.finish(state)
    try:
        write_atlas(config.out, content)
    except AtlasWriteError as error:
        raise PrecomputeError(
            f"{error}. The finished pass is kept in {job.checkpoint_path}: free some space and "
            "rerun with --resume to write the atlas without redoing the pass"
        ) from error
    job.checkpoint_path.unlink(missing_ok=True)
    return {
        "atlas": str(config.out),
        "seconds": round(time.monotonic() - started, 1),
        "pass_seconds": round(state.seconds, 1),
        "tokens": content.meta["tokens"],
        "saes": len(job.saes),
        "features": sum(s.d_sae for s in job.saes),
        "size_mb": round(config.out.stat().st_size / 2**20, 2),
    }
