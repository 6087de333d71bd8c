"""Load any Hugging Face causal LM (hub id or local folder) as a transformer-lens HookedTransformer.

Going through transformer-lens gives every model the standard hook names
(``blocks.L.hook_resid_pre``, ``blocks.L.hook_mlp_out``, ...) that SAEs and circuit-tracer use.
Weights are loaded without transformer-lens's folding and centring, so activations at each hook
are exactly the Hugging Face model's and SAEs trained on either agree. Nothing touches the network:
a hub id must already be in the local Hugging Face cache.

The config is mapped by ``analysis.model_configs`` (read from config.json, not from the folder's
name; its docstring says why transformer-lens's own converter is not used) and the weights by
transformer-lens's per-architecture converters, from the Hugging Face model loaded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from transformer_lens import HookedTransformer
from transformer_lens import loading_from_pretrained as tl_loading

from analysis.devices import pick_device
from analysis.model_configs import UnsupportedArchitecture, hooked_config
from analysis.model_files import ModelLoadError, resolve_model_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready for hooks, with what it was loaded from."""

    spec: str
    path: Path
    model: HookedTransformer
    device: str

    @property
    def architecture(self) -> str:
        return self.model.cfg.original_architecture or "unknown"


def model_tokenizer(model: HookedTransformer) -> PreTrainedTokenizerBase:
    """``model.tokenizer``, which transformer-lens types as optional: ``load_model`` always attaches one."""
    tokenizer = model.tokenizer
    assert tokenizer is not None, "models are loaded with their tokenizer"
    return tokenizer


def load_tokenizer(spec: str):
    """The tokenizer of a model spec, without loading the model."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:  # a broken config.json or tokenizer file
        raise ModelLoadError(f"the tokenizer in {path} could not be read: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_model(spec: str, device: str | None = None, dtype: str | torch.dtype = "float32") -> LoadedModel:
    """Load ``spec`` onto ``device`` (CUDA when available, else CPU) in ``dtype`` (a name from
    DTYPES or a torch dtype) as an unprocessed HookedTransformer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ModelLoadError(f"unknown dtype '{dtype}': choose from {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    path = resolve_model_path(spec)
    device = pick_device(device)
    try:
        hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:  # config.json that is not JSON, or not a model config
        raise ModelLoadError(f"{path / 'config.json'} could not be read: {_first_line(error)}") from None
    architecture = (hf_config.architectures or [hf_config.model_type])[0]
    try:
        cfg = hooked_config(hf_config, architecture, device=device, dtype=dtype)
    except UnsupportedArchitecture as error:
        raise ModelLoadError(f"{error} (in {path / 'config.json'})") from error
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, SafetensorError) as error:
        raise ModelLoadError(
            f"the model in {path} could not be read (damaged or incomplete files?): {error}"
        ) from error
    state_dict = tl_loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=dtype)
    del hf_model
    model = HookedTransformer(cfg, tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.cfg.model_name = Path(spec).name if path == Path(spec).expanduser() else spec
    model.move_model_modules_to_device()
    model.eval()
    return LoadedModel(spec=spec, path=path, model=model, device=device)
