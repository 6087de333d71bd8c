"""``python -m analysis precompute``: one pass of a corpus through a model and its SAEs into an atlas.

Per batch of windows: one forward pass of the model up to the last hooked layer, every SAE
encoded from that pass's cache, each SAE's ``FeatureStats`` updated with tensor operations. About
``quality_windows`` windows spread evenly over the run (at most one in ``MIN_QUALITY_STRIDE``) are
also measured for explained variance and CE loss recovered: those cost extra forward passes, and a
fixed sample estimates them as well on a billion tokens as on a million. The running state is checkpointed
atomically every few minutes; ``--resume`` continues from it. ``--shard i/n`` processes a
deterministic slice of the windows and ``--latent-shard j/m`` a slice of every SAE's latents
(``latent_range.py``); each writes a partial atlas that ``merge`` combines. A latent-range shard
also keeps each token's count of firing latents in its range (the L0 histogram counts latents of
the whole SAE, which only the sum over ranges gives), and only latent range 0 measures quality
(explained variance and CE loss need the whole SAE's reconstruction).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformer_lens import HookedTransformer

from analysis.atlas.corpus_source import CorpusTokens, load_corpus
from analysis.atlas.feature_stats import FeatureStats, block_salt
from analysis.atlas.latent_range import latent_range, range_encoder
from analysis.atlas.memory_estimate import SAEShape, check_budget, worker_memory
from analysis.atlas.run_config import PrecomputeConfig, PrecomputeError, check_config, parse_shard
from analysis.atlas.store import AtlasContent, AtlasWriteError, SAEResult, write_atlas
from analysis.atlas.weight_stats import find_neighbours, logit_effects, residual_directions
from analysis.content_hash import model_hash, sae_hash
from analysis.devices import pick_device
from analysis.hooked_forward import run_to_hooks
from analysis.model_loading import LoadedModel, load_model, load_tokenizer, model_tokenizer
from analysis.paths import REPO_ROOT
from analysis.sae_loading import LoadedSAE, check_fits, load_saes
from analysis.sae_metrics import QualitySums, measure_batch
from analysis.token_ids import special_token_id

MIN_QUALITY_STRIDE = 100

log = logging.getLogger(__name__)
__all__ = ["Precompute", "PrecomputeConfig", "PrecomputeError", "parse_shard", "run_precompute"]


@dataclass
class RunState:
    """What a checkpoint holds: enough to continue the pass exactly where it stopped."""

    fingerprint: str
    done: int
    stats: list[FeatureStats]
    quality: list[QualitySums]
    token_counts: torch.Tensor
    seconds: float = 0.0
    # [first window (index in the shard), windows per batch] from there on: changed by an
    # out-of-memory halving or a resume with another --batch; ``verify`` replays the same batches
    batches: list[list[int]] = field(default_factory=list)
    # latent-range shards: per SAE, each token's count of firing latents of the range [windows, context]
    # (int32, -1 at special tokens); None for a shard that holds every latent
    token_l0: list[torch.Tensor] | None = None
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def sae_activations(
    model: HookedTransformer,
    saes: list[LoadedSAE],
    hooks: list[str],
    tokens: torch.Tensor,
    special: torch.Tensor,
    encoders: list[Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> tuple[torch.Tensor, Iterator[torch.Tensor]]:
    """Which tokens count (not special), and each SAE's activations on ``tokens`` [windows, context]
    with special tokens zeroed, one SAE at a time (through ``encoders``, a latent range's, when
    given); the forward pass runs to the last of ``hooks``. Shared by the pass and ``verify``,
    which must compute exactly what the pass computed."""
    counted = ~torch.isin(tokens, special)
    cache = run_to_hooks(model, tokens, hooks)

    def encode() -> Iterator[torch.Tensor]:
        for loaded, encoder in zip(saes, encoders or [s.sae.encode for s in saes]):
            acts = encoder(cache[loaded.hook_name]).float()
            acts[~counted] = 0
            yield acts
            del acts  # one SAE's activations at a time: freed before the next SAE is encoded

    return counted, encode()


def _note_batch(state: RunState, batch: int) -> None:
    """Record that windows from ``state.done`` on are processed ``batch`` at a time."""
    if state.batches and state.batches[-1][0] == state.done:
        state.batches[-1][1] = batch
    elif not state.batches or state.batches[-1][1] != batch:
        state.batches.append([state.done, batch])


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
        check_config(config)
        # The corpus is read (lazily, only as far as the run needs) before the model and SAEs load,
        # so a corpus problem or a --tokens beyond it is reported at once.
        self.corpus: CorpusTokens = load_corpus(
            config.corpus, load_tokenizer(config.model), max_tokens=config.stream_tokens, strict=config.strict
        )
        for notice in self.corpus.notices:
            log.warning(notice)
        available = self.corpus.n_windows(config.context)
        if available == 0:
            raise PrecomputeError(
                f"corpus {config.corpus!r} has {len(self.corpus.stream)} tokens: "
                f"fewer than one window of {config.context}"
            )
        self.total_windows = min(available, math.ceil(config.tokens / config.context))
        if self.total_windows * config.context < config.tokens:
            log.warning(
                f"corpus {config.corpus!r} holds {len(self.corpus.stream):,} tokens, fewer than --tokens "
                f"{config.tokens:,}: the atlas uses all of it, {self.total_windows:,} windows of {config.context} "
                f"({self.total_windows * config.context:,} tokens with BOS)"
            )
        device = pick_device(config.device)
        # SAEs before the model: a damaged SAE file is reported without waiting for the model to load
        self.saes: list[LoadedSAE] = [s for spec in config.saes for s in load_saes(spec, device=device)]
        self.latent_ranges = [latent_range(s.d_sae, config.latent_shard) for s in self.saes]
        small = [s for s, (first, end) in zip(self.saes, self.latent_ranges) if end == first]
        if small:
            raise PrecomputeError(
                f"--latent-shard {config.latent_shard[0]}/{config.latent_shard[1]}: SAE {small[0].name} has only "
                f"{small[0].d_sae} latents, fewer than the {config.latent_shard[1]} latent ranges"
            )
        index, count = config.shard
        self.window_range = (index * self.total_windows // count, (index + 1) * self.total_windows // count)
        self.memory = worker_memory(
            [
                SAEShape(s.hook_name, s.sae.cfg.d_in, s.d_sae, s.architecture, first, end)
                for s, (first, end) in zip(self.saes, self.latent_ranges)
            ],
            config.top_k,
            config.context,
            config.batch_windows,
            shard_windows=self.window_range[1] - self.window_range[0],
            latent_shards=config.latent_shard[1],
        )
        check_budget(self.memory, config.max_worker_bytes)
        log.info("%s", self.memory.line())
        self.encoders = [range_encoder(s, first, end) for s, (first, end) in zip(self.saes, self.latent_ranges)]
        self.loaded: LoadedModel = load_model(config.model, device=device, dtype=config.dtype)
        log.info(
            "model %s (%s) on %s; SAEs %s",
            config.model,
            self.loaded.architecture,
            self.loaded.device,
            ", ".join(s.name for s in self.saes),
        )
        self.model = self.loaded.model
        check_fits(self.model, self.saes)
        names = [s.name for s in self.saes]
        if len(set(names)) != len(names):
            raise PrecomputeError(f"two SAEs share a name ({names}); give each a distinct folder name")
        tokenizer = model_tokenizer(self.model)
        self.bos_id = special_token_id(tokenizer, "bos")
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=self.loaded.device)
        self.window_ids = np.arange(*self.window_range)
        self.quality_stride = max(MIN_QUALITY_STRIDE, math.ceil(self.total_windows / max(1, config.quality_windows)))
        self.hooks = sorted({s.hook_name for s in self.saes})
        self.checkpoint_path = config.checkpoint_path
        self.checkpointed_windows = -1  # windows done in the checkpoint on disk (-1: none of this run)
        log.info(
            "corpus %s: %s tokens in %s documents; %s of its %s windows of %s tokens, shard %s/%s, latents %s/%s",
            config.corpus,
            f"{len(self.corpus.stream):,}",
            f"{len(self.corpus.doc_ids):,}",
            f"{len(self.window_ids):,}",
            f"{self.total_windows:,}",
            config.context,
            index,
            count,
            *config.latent_shard,
        )
        if config.resume and not self.checkpoint_path.exists():
            log.warning(f"no checkpoint at {self.checkpoint_path}: starting from the beginning")

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

    @property
    def latent_sharded(self) -> bool:
        return self.config.latent_shard[1] > 1

    def _fresh_state(self, fingerprint: str) -> RunState:
        device, config = self.loaded.device, self.config
        shape = (len(self.window_ids), config.context)
        return RunState(
            fingerprint=fingerprint,
            done=0,
            stats=[  # a range's samples are drawn as the whole SAE's would be (block_salt)
                FeatureStats.empty(
                    end - first, config.top_k, config.context, block_salt(config.seed * 1000 + i, first), device
                )
                for i, (first, end) in enumerate(self.latent_ranges)
            ],
            quality=[QualitySums(s.d_sae) for s in self.saes],
            token_counts=torch.zeros(self.model.cfg.d_vocab, dtype=torch.long, device=device),
            token_l0=[torch.zeros(shape, dtype=torch.int32, device=device) for _ in self.saes]
            if self.latent_sharded
            else None,
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
        if state.token_l0 is not None:
            state.token_l0 = [t.to(self.loaded.device) for t in state.token_l0]
        state.token_counts = state.token_counts.to(self.loaded.device)
        self.checkpointed_windows = state.done
        log.info("resuming from %s: %s windows already done", self.checkpoint_path, f"{state.done:,}")
        return state

    def save_checkpoint(self, state: RunState) -> None:
        """Replace the checkpoint atomically; if that fails (disk full), the previous one is intact."""
        temporary = self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp")
        try:
            torch.save(state, temporary)
            os.replace(temporary, self.checkpoint_path)
            self.checkpointed_windows = state.done
            log.debug("checkpoint %s: %s windows done", self.checkpoint_path, f"{state.done:,}")
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
        counted, per_sae = sae_activations(self.model, self.saes, self.hooks, tokens, self.special, self.encoders)
        self.count(state, ids, counted, per_sae)
        del per_sae
        state.token_counts += torch.bincount(tokens[counted], minlength=len(state.token_counts))
        sampled = torch.from_numpy(ids % self.quality_stride == 0)
        if sampled.any() and self.config.latent_shard[0] == 0:
            measure_batch(
                self.model, self.saes, tokens[sampled.to(tokens.device)], self.special, state.quality, with_ce=True
            )

    def count(self, state: RunState, ids: np.ndarray, counted: torch.Tensor, per_sae: Iterator[torch.Tensor]) -> None:
        """Encode each SAE (``per_sae``, lazily: one SAE's activations at a time) and add them to its
        statistics: the part of a batch that ``memory_estimate.batch_bytes_per_token`` sizes."""
        window_ids = torch.from_numpy(ids).to(self.loaded.device)
        rows = slice(state.done, state.done + len(ids))
        for sae, stats in enumerate(state.stats):
            acts = next(per_sae)  # not zip(per_sae, ...): zip's reused tuple would hold the last one
            stats.update(acts, window_ids, counted)
            if state.token_l0 is not None:
                state.token_l0[sae][rows] = torch.where(counted, (acts > 0).sum(dim=2, dtype=torch.int32), -1)
            del acts  # before the next SAE is encoded

    def stream(self, on_progress: Callable[[int], None] | None = None) -> RunState:
        """Run the pass (or finish a checkpointed one), with progress, checkpointing as it goes.

        ``on_progress`` (a ``--ray`` shard's report to the cluster-wide bar) replaces the local bar
        and gets the windows done after each batch."""
        fingerprint = hashlib.sha256(
            json.dumps(
                self.run_description()
                | {"shard": self.config.shard, "latent_shard": self.config.latent_shard, "tokens": self.config.tokens},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        state = self._load_checkpoint(fingerprint) or self._fresh_state(fingerprint)
        batch = self.config.batch_windows
        context = self.config.context
        state.batches = list(getattr(state, "batches", []))  # a checkpoint from before this field has none
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
                _note_batch(state, batch)
                started = time.monotonic()
                try:
                    self._process(state, ids)
                except torch.OutOfMemoryError:
                    if batch == 1:
                        raise
                    batch = max(1, batch // 2)
                    torch.cuda.empty_cache()
                    log.warning("out of memory: batch lowered to %s windows", batch)
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
        log.info("pass done in %.1f s; logit effects, neighbours and labels from the weights", state.seconds)
        directions = [residual_directions(self.model, s) for s in self.saes]
        ranges = self.latent_ranges
        neighbours, method = find_neighbours(directions, self.config.exact_neighbours_up_to, latent_ranges=ranges)
        results = [
            SAEResult(
                info=_sae_info(loaded),
                stats=stats.to("cpu"),
                quality=quality,
                logits=logit_effects(self.model, direction[first:end]) if direction is not None else None,
                neighbours=near,
            )
            for loaded, stats, quality, direction, near, (first, end) in zip(
                self.saes, state.stats, state.quality, directions, neighbours, ranges
            )
        ]
        tokenizer = model_tokenizer(self.model)
        meta = self.run_description() | {
            "shards": [list(self.config.shard)],
            "window_ranges": [list(self.window_range)],
            "batches": [state.batches],
            "windows": int(len(self.window_ids)),
            "tokens": int(len(self.window_ids) * self.config.context),
            "versions": _versions(),
            "started": state.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pass_seconds": state.seconds,
            "device": self.loaded.device,
            "neighbours": method,
        }
        if self.latent_sharded:
            meta["latent_shard"] = list(self.config.latent_shard)
        return AtlasContent(
            meta=meta,
            corpus=self.corpus,
            bos_id=self.bos_id,
            token_text=[tokenizer.decode([i]) for i in range(self.model.cfg.d_vocab)],
            token_counts=state.token_counts.cpu().numpy(),
            saes=results,
            token_l0=None if state.token_l0 is None else (self.window_ids, [t.cpu().numpy() for t in state.token_l0]),
        )


def run_precompute(config: PrecomputeConfig, on_progress: Callable[[int], None] | None = None) -> dict:
    """Build the atlas at ``config.out``; returns the summary printed at the end."""
    started = time.monotonic()
    job = Precompute(config)
    with logging_redirect_tqdm([logging.getLogger("analysis")]):  # log lines above the progress bar, not in it
        state = job.stream(on_progress)
    if job.checkpointed_windows != state.done:
        job.save_checkpoint(state)  # the pass is the expensive part: keep it until the atlas is on disk
    content = job.finish(state)
    log.info("writing %s", config.out)
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
        "features": sum(end - first for first, end in job.latent_ranges),
        "size_mb": round(config.out.stat().st_size / 2**20, 2),
    }
