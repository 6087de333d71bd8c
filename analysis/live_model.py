"""The model and SAEs that live work runs on (steering, test-your-text, search via inference,
graphs): loaded once, checked against each other, used by one caller at a time.

Why one caller at a time: a HookedTransformer's hooks are module state, so two generations with
different steering hooks on one model would steer each other. Callers queue behind a lock; the
queue is bounded, so one busy user cannot make every other session wait without end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

from analysis.content_hash import model_hash, sae_hash, tensor_hash
from analysis.errors import SAEscopeError
from analysis.live_errors import LiveInputError
from analysis.live_specs import LiveSpecs
from analysis.model_loading import LoadedModel, load_model, model_tokenizer
from analysis.sae_loading import LoadedSAE, SAELoadError, check_fits, load_saes

if TYPE_CHECKING:
    from circuit_tracer.transcoder import TranscoderSet
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

MAX_WAITING = 4  # callers queued behind the one running; more are told the model is busy
WAIT_SECONDS = 120.0


class LiveModelBusy(SAEscopeError, RuntimeError):
    """Too many callers are already waiting for the model, or the wait took too long."""


@dataclass
class LiveModel:
    """A loaded model with its SAEs by name, and the lock live work takes."""

    loaded: LoadedModel
    saes: dict[str, LoadedSAE]
    max_waiting: int = MAX_WAITING
    wait_seconds: float = WAIT_SECONDS
    load_seconds: float = 0.0
    # circuit-tracer's own TranscoderSet or CrossLayerTranscoder, for graphs (analysis/graphs/transcoder_sets.py)
    circuit_transcoders: TranscoderSet | CrossLayerTranscoder | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _waiting: int = 0
    _waiting_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def model(self):
        return self.loaded.model

    @property
    def device(self) -> str:
        return self.loaded.device

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return model_tokenizer(self.loaded.model)

    @property
    def n_ctx(self) -> int:
        return int(self.loaded.model.cfg.n_ctx)

    @cached_property
    def model_hash(self) -> str:
        return model_hash(self.loaded.model)

    @cached_property
    def sae_hashes(self) -> dict[str, str]:
        """Each SAE's content hash; a circuit-tracer configuration's layers share the whole one's."""
        hashes = {name: sae_hash(loaded) for name, loaded in self.saes.items()}
        if self.circuit_transcoders is not None:
            from analysis.graphs.transcoder_sets import layer_names

            tc = self.circuit_transcoders
            whole = tensor_hash(tc.state_dict(), f"{tc.feature_input_hook}->{tc.feature_output_hook}")
            hashes |= dict.fromkeys(layer_names(tc), whole)
        return hashes

    def sae(self, name: str) -> LoadedSAE:
        """The loaded SAE called ``name``; LiveInputError naming the ones there are otherwise."""
        if name not in self.saes:
            raise LiveInputError(f"no SAE called {name!r} is loaded; loaded: {', '.join(self.saes) or 'none'}")
        return self.saes[name]

    def check_latent(self, name: str, latent: object) -> LoadedSAE:
        """The SAE of a (name, latent) pair after checking the latent id exists in it."""
        loaded = self.sae(name)
        if isinstance(latent, bool) or not isinstance(latent, int):
            raise LiveInputError(f"latent id must be a whole number, not {latent!r}")
        if not 0 <= latent < loaded.d_sae:
            raise LiveInputError(f"{name} has no latent {latent}: its latents are numbered 0 to {loaded.d_sae - 1}")
        return loaded

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the model alone; wait in a bounded queue, else raise LiveModelBusy."""
        with self._waiting_lock:
            if self._waiting >= self.max_waiting:
                raise LiveModelBusy(
                    f"the model is busy: {self._waiting} requests are already waiting; try again in a moment"
                )
            self._waiting += 1
        try:
            acquired = self._lock.acquire(timeout=self.wait_seconds)
        finally:
            with self._waiting_lock:
                self._waiting -= 1
        if not acquired:
            raise LiveModelBusy(f"the model stayed busy for {self.wait_seconds:.0f} s; try again")
        try:
            yield
        finally:
            self._lock.release()

    def tokenize(self, text: str, keep_last: int | None = None) -> tuple[torch.Tensor, int]:
        """``text`` as token ids [1, n] with BOS first, and how many tokens were cut from the left
        so that at most ``keep_last`` (default: the model's context) remain."""
        if not isinstance(text, str) or not text.strip():
            raise LiveInputError("the text is empty: type a prompt first")
        limit = self.n_ctx if keep_last is None else keep_last
        if limit < 2:
            raise LiveInputError(f"no room for a prompt: the model's context is {self.n_ctx} tokens")
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        bos = self.tokenizer.bos_token_id
        budget = limit - (bos is not None)
        cut = max(0, len(ids) - budget)
        ids = ([bos] if bos is not None else []) + ids[cut:]
        return torch.tensor([ids], device=self.device), cut

    def token_strings(self, ids: torch.Tensor | list[int]) -> list[str]:
        """Each id decoded on its own (data to be escaped when shown, never markup)."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([int(i)]) for i in values]


def load_live(
    specs: LiveSpecs,
    device: str | None = None,
    dtype: str = "float32",
    progress: Callable[[str], None] | None = None,
) -> LiveModel:
    """Load the model and every SAE of ``specs`` onto one device (CUDA when there is one) and check
    that each SAE fits the model; ModelLoadError / SAELoadError say which does not and why.
    ``progress`` is told each stage as it starts (the Steer page shows them while it waits).
    circuit-tracer is imported only when a spec is one of its transcoder configurations."""
    started = time.perf_counter()
    say = progress or (lambda stage: None)
    from analysis.graphs.transcoder_sets import config_folder

    say("model")
    loaded = load_model(specs.model, device=device, dtype=dtype)
    folders = {spec: config_folder(spec) for spec in specs.saes}
    say("SAEs")
    saes = [sae for spec in specs.saes if folders[spec] is None for sae in load_saes(spec, device=loaded.device)]
    say(f"fit check on {loaded.device}")
    check_fits(loaded.model, saes)
    circuit = {spec: folder for spec, folder in folders.items() if folder is not None}
    if len(circuit) > 1:
        raise SAELoadError("give at most one circuit-tracer transcoder configuration")
    transcoders = None
    for spec, folder in circuit.items():
        from analysis.graphs.transcoder_sets import as_sae_lens, check_transcoders_fit, load_transcoders

        say("circuit-tracer transcoders")
        transcoders = load_transcoders(folder, loaded.device)
        check_transcoders_fit(transcoders, loaded.model)
        from circuit_tracer.transcoder import TranscoderSet

        if isinstance(transcoders, TranscoderSet):  # its layers steer and search like any transcoder
            saes += as_sae_lens(transcoders, spec)
    by_name: dict[str, LoadedSAE] = {}
    for sae in saes:
        if sae.name in by_name:
            raise SAELoadError(f"two SAEs are called {sae.name!r}; give them distinct folder names")
        by_name[sae.name] = sae
    return LiveModel(
        loaded=loaded,
        saes=by_name,
        load_seconds=time.perf_counter() - started,
        circuit_transcoders=transcoders,
    )
