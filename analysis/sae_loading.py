"""Load sae-lens SAEs and transcoders (``release/sae_id`` or local folders) and check they fit a model.

A local spec is either one SAE folder in sae-lens's disk format (``cfg.json`` +
``sae_weights.safetensors``) or a folder of such folders, loaded in name order.

An SAE is fed the activations it was trained on: sae-lens records how its model was loaded in
``metadata.model_from_pretrained_kwargs`` (``gpt2-small-res-jb``: ``center_writing_weights=True``),
and sae-lens's own recipe is ``HookedTransformer.from_pretrained_no_processing(**those kwargs)``.
``check_fits`` applies the same weight processing to the (unprocessed) loaded model, and refuses
SAEs that were trained on differently processed models, since one model cannot feed both.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY
from sae_lens.saes.transcoder import Transcoder
from safetensors import SafetensorError
from transformer_lens import HookedTransformer

from analysis.errors import SAEscopeError
from analysis.model_loading import model_tokenizer

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


class SAELoadError(SAEscopeError, ValueError):
    """An SAE spec that cannot be loaded or does not fit the model, with a message that says why."""


@dataclass
class LoadedSAE:
    """One SAE or transcoder, with the name it is shown under and where it came from."""

    name: str
    spec: str
    sae: SAE

    @property
    def hook_name(self) -> str:
        return self.sae.cfg.metadata.hook_name

    @property
    def is_transcoder(self) -> bool:
        return isinstance(self.sae, Transcoder)

    @property
    def hook_name_out(self) -> str | None:
        """Where a transcoder writes (sae-lens keeps it in the metadata); None for a plain SAE."""
        return self.sae.cfg.metadata.hook_name_out if self.is_transcoder else None

    @property
    def architecture(self) -> str:
        return self.sae.cfg.architecture()

    @property
    def d_sae(self) -> int:
        return self.sae.cfg.d_sae


def _is_sae_folder(path: Path) -> bool:
    return (path / CFG_FILE).exists() and (path / WEIGHTS_FILE).exists()


def _load_folder(path: Path, spec: str, device: str) -> LoadedSAE:
    try:
        cfg = json.loads((path / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SAELoadError(f"{path / CFG_FILE} is not a readable JSON config ({error})") from None
    architecture = cfg.get("architecture", "standard") if isinstance(cfg, dict) else None
    if architecture not in SAE_CLASS_REGISTRY:
        known = ", ".join(sorted(SAE_CLASS_REGISTRY))
        raise SAELoadError(f"unknown SAE architecture '{architecture}' in {path / CFG_FILE}; sae-lens knows: {known}")
    try:
        sae = SAE.load_from_disk(path, device=device)
    except SafetensorError as error:
        raise SAELoadError(f"{path / WEIGHTS_FILE} is not a readable safetensors file ({error})") from None
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as error:
        # torch's load_state_dict lists every mismatch over many lines: say the first, and where
        raise SAELoadError(f"{path}: {CFG_FILE} and {WEIGHTS_FILE} disagree ({_first_detail(error)})") from None
    return LoadedSAE(name=path.name, spec=spec, sae=sae)


def _first_detail(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict") else lines[0]
    return detail[:200]


@contextmanager
def _offline() -> Iterator[None]:
    """No network for the duration: huggingface_hub reads HF_HUB_OFFLINE once, at import, into
    ``constants.HF_HUB_OFFLINE`` (which its downloads consult), so both are set and restored."""
    from huggingface_hub import constants

    previous_env, previous_constant = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous_constant
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env


def _load_release(spec: str, device: str) -> LoadedSAE:
    release, _, sae_id = spec.partition("/")
    try:
        with _offline(), warnings.catch_warnings():  # never reach for the network, even if it is there
            # sae-lens warns to load the model with the SAE's model_from_pretrained_kwargs: check_fits does
            warnings.filterwarnings("ignore", message=".*non-empty model_from_pretrained_kwargs")
            sae = SAE.from_pretrained(release, sae_id, device=device)
    except (LocalEntryNotFoundError, OSError) as error:  # checked first: the former is also a ValueError
        raise SAELoadError(
            f"SAE '{spec}' is not available offline: download it first or give a local folder"
        ) from error
    except ValueError as error:
        raise SAELoadError(f"unknown SAE '{spec}': {error}") from error
    return LoadedSAE(name=f"{release}/{sae_id}", spec=spec, sae=sae)


def _transcoder_set(spec: str, device: str) -> list[LoadedSAE] | None:
    """The per-layer transcoders of circuit-tracer's transcoder-set configuration that ``spec``
    names (a folder with config.yaml, or a hub repo of one in the local cache), else None."""
    from analysis.graphs.transcoder_sets import as_sae_lens, config_folder, load_transcoders

    folder = config_folder(spec)
    return None if folder is None else as_sae_lens(load_transcoders(folder, device), spec)


def load_saes(spec: str, device: str = "cpu") -> list[LoadedSAE]:
    """Every SAE a spec names: a folder, a folder of folders, a sae-lens ``release/sae_id``, or
    circuit-tracer's transcoder-set configuration (a folder or a cached hub repo with config.yaml)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if _is_sae_folder(path):
            return [_load_folder(path, spec, device)]
        children = sorted(child for child in path.iterdir() if _is_sae_folder(child))
        if not children and (transcoders := _transcoder_set(spec, device)) is not None:
            return transcoders
        if not children:
            raise SAELoadError(f"'{spec}' holds no SAE: expected {CFG_FILE} and {WEIGHTS_FILE}, here or in subfolders")
        return [_load_folder(child, spec, device) for child in children]
    if path.exists() or spec.startswith((".", "/", "~")) or "/" not in spec:
        raise SAELoadError(f"SAE folder '{spec}' does not exist (or give a sae-lens release/sae_id)")
    if not _is_release(spec) and (transcoders := _transcoder_set(spec, device)) is not None:
        return transcoders
    return [_load_release(spec, device)]


def _is_release(spec: str) -> bool:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return spec.partition("/")[0] in get_pretrained_saes_directory()


# HookedTransformer weight processing an SAE's model_from_pretrained_kwargs may ask for; other keys
# (n_devices, dtype, ...) say how to place the model, not what its activations are.
PROCESSING_FLAGS = (
    "fold_ln",
    "center_writing_weights",
    "center_unembed",
    "fold_value_biases",
    "refactor_factored_attn_matrices",
)


def model_processing(saes: list[LoadedSAE]) -> dict[str, bool]:
    """The weight processing the SAEs were trained with; SAELoadError if two of them disagree."""
    wanted: dict[str, bool] | None = None
    first = ""
    for loaded in saes:
        kwargs = getattr(loaded.sae.cfg.metadata, "model_from_pretrained_kwargs", None) or {}
        flags = {flag: bool(kwargs.get(flag, False)) for flag in PROCESSING_FLAGS}
        if wanted is None:
            wanted, first = flags, loaded.name
        elif flags != wanted:
            differ = ", ".join(f"{f}={wanted[f]} vs {flags[f]}" for f in PROCESSING_FLAGS if wanted[f] != flags[f])
            raise SAELoadError(
                f"SAEs '{first}' and '{loaded.name}' were trained on differently processed models ({differ}); "
                "load them in separate runs"
            )
    return wanted or dict.fromkeys(PROCESSING_FLAGS, False)


def apply_model_processing(model: HookedTransformer, saes: list[LoadedSAE]) -> None:
    """Process the freshly loaded, unprocessed ``model``'s weights as the SAEs' training did.

    ``fold_ln`` is refused: transformer-lens folds LayerNorms only while building a model (its
    modules become LNPre), and folding an already built one would apply the gains twice."""
    flags = model_processing(saes)
    if flags["fold_ln"]:
        raise SAELoadError(
            "these SAEs were trained on a model with folded LayerNorms (fold_ln), which is not supported"
        )
    if any(flags.values()):
        model.load_and_process_state_dict(model.state_dict(), **flags)


@torch.no_grad()
def hook_widths(model: HookedTransformer, hook_names: list[str]) -> dict[str, int]:
    """The last-dimension width of each hook, read off a one-token forward pass."""
    token = torch.tensor([[model_tokenizer(model).bos_token_id or 0]], device=model.cfg.device)
    _, cache = model.run_with_cache(token, names_filter=lambda name: name in hook_names)
    return {name: cache[name].shape[-1] for name in hook_names}


def check_fits(model: HookedTransformer, saes: list[LoadedSAE]) -> None:
    """Process ``model`` as the SAEs were trained (``apply_model_processing``); raise SAELoadError
    naming the first SAE whose hooks or widths do not match it."""
    apply_model_processing(model, saes)
    wanted = [(s, s.hook_name, s.sae.cfg.d_in) for s in saes]
    wanted += [(s, s.hook_name_out, s.sae.cfg.d_out) for s in saes if s.is_transcoder]
    needed: list[tuple[LoadedSAE, str, int]] = []
    for loaded, hook, width in wanted:
        if hook is None:
            raise SAELoadError(f"transcoder '{loaded.name}' does not say where it writes (metadata.hook_name_out)")
        if hook not in model.hook_dict:
            nearest = difflib.get_close_matches(hook, list(model.hook_dict), n=3, cutoff=0.0)
            raise SAELoadError(
                f"SAE '{loaded.name}' uses hook '{hook}', which this model "
                f"({model.cfg.n_layers} layers, {model.cfg.original_architecture}) does not have; "
                f"nearest: {', '.join(nearest)}"
            )
        needed.append((loaded, hook, width))
    widths = hook_widths(model, sorted({hook for _, hook, _ in needed}))
    for loaded, hook, width in needed:
        if widths[hook] != width:
            raise SAELoadError(
                f"SAE '{loaded.name}' expects width {width} at '{hook}', but this model's activations "
                f"there have width {widths[hook]}: the SAE was trained on a different model"
            )
