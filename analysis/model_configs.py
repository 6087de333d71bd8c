"""A Hugging Face ``config.json`` as a transformer-lens ``HookedTransformerConfig``, read field by field.

Why our own mapping rather than transformer-lens's ``convert_hf_model_config``: in transformer-lens
3.2.1 that function picks the architecture from the model's *name* ("llama" or "gemma" anywhere in a
folder path) and holds Gemma 2 and Gemma 3 only as fixed dictionaries of Google's published sizes,
so a local folder fails in ways that depend on what it is called: a Llama folder raises
``UnboundLocalError: hf_config``, a folder called ``gemma2`` is loaded as Gemma 1, any other-sized
Gemma is refused, its generic Llama branch drops ``rope_theta`` and Llama 3's rope scaling, and a
GPT-2 config saved by current ``transformers`` (no ``n_ctx``) raises AttributeError. The fields
below are the ones transformer-lens's own per-model dictionaries set, read from the config instead
of the name; weights still go through transformer-lens's converters (``get_pretrained_state_dict``).
Each architecture is tested against the Hugging Face model's hidden states (tests/test_architectures.py).

Why HookedTransformer and not transformer-lens 3's ``TransformerBridge.boot_transformers``: the
bridge loads these folders too, but everything downstream (circuit-tracer's TransformerLens
replacement model for graphs, steering hooks, ``W_U``/``W_O`` reads for logit effects) is built on
HookedTransformer's modules and config; one model class for every architecture keeps one code path.
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import HookedTransformerConfig

from analysis.errors import SAEscopeError

MAX_CONTEXT = 8192  # the causal mask is n_ctx x n_ctx; 128k-position models get a usable cap (as transformer-lens does)


class UnsupportedArchitecture(SAEscopeError, ValueError):
    """An architecture no mapping below covers."""


def _head_dim(hf: Any) -> int:
    head_dim = getattr(hf, "head_dim", None)
    return int(head_dim) if head_dim else hf.hidden_size // hf.num_attention_heads


def _kv_heads(hf: Any) -> int | None:
    """Grouped-query attention's key/value head count, None when every head has its own (plain MHA)."""
    kv = getattr(hf, "num_key_value_heads", None)
    return None if kv is None or kv == hf.num_attention_heads else int(kv)


def _rope_theta(hf: Any) -> float:
    return float(getattr(hf, "rope_theta", None) or (hf.rope_parameters or {}).get("rope_theta", 10000.0))


def _context(hf: Any) -> int:
    return min(int(hf.max_position_embeddings), MAX_CONTEXT)


def _attention_types(hf: Any) -> list[str] | None:
    """transformer-lens's per-layer 'local'/'global' from the config's ``layer_types``."""
    layer_types = getattr(hf, "layer_types", None)
    if not layer_types or not getattr(hf, "sliding_window", None):
        return None
    return ["local" if kind == "sliding_attention" else "global" for kind in layer_types]


def _rope_scaling(hf: Any) -> dict[str, Any]:
    """Llama 3's frequency-dependent rope scaling ('llama3'); other kinds are refused, not ignored."""
    scaling = getattr(hf, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return {}
    if kind != "llama3":
        raise UnsupportedArchitecture(f"rope scaling '{kind}' is not supported (only llama3's)")
    return {
        "use_NTK_by_parts_rope": True,
        "NTK_by_parts_factor": float(scaling["factor"]),
        "NTK_by_parts_low_freq_factor": float(scaling["low_freq_factor"]),
        "NTK_by_parts_high_freq_factor": float(scaling["high_freq_factor"]),
        "NTK_original_ctx_len": int(scaling["original_max_position_embeddings"]),
    }


def _gpt2(hf: Any) -> dict[str, Any]:
    return {
        "d_model": hf.n_embd,
        "d_head": hf.n_embd // hf.n_head,
        "n_heads": hf.n_head,
        "d_mlp": hf.n_inner or 4 * hf.n_embd,
        "n_layers": hf.n_layer,
        "n_ctx": min(int(getattr(hf, "n_ctx", None) or hf.n_positions), MAX_CONTEXT),
        "eps": hf.layer_norm_epsilon,
        "d_vocab": hf.vocab_size,
        "act_fn": hf.activation_function,
        "use_attn_scale": hf.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": hf.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LN",
    }


def _neox(hf: Any) -> dict[str, Any]:
    d_head = hf.hidden_size // hf.num_attention_heads
    return {
        "d_model": hf.hidden_size,
        "d_head": d_head,
        "n_heads": hf.num_attention_heads,
        "d_mlp": hf.intermediate_size,
        "n_layers": hf.num_hidden_layers,
        "n_ctx": _context(hf),
        "eps": hf.layer_norm_eps,
        "d_vocab": hf.vocab_size,
        "act_fn": hf.hidden_act,
        "parallel_attn_mlp": hf.use_parallel_residual,
        "positional_embedding_type": "rotary",
        "rotary_dim": round(hf.rotary_pct * d_head),
        "rotary_base": _rope_theta(hf),
        "rotary_adjacent_pairs": False,
        "normalization_type": "LN",
        "default_prepend_bos": False,
    }


def _rotary_rms(hf: Any, d_head: int, act_fn: str) -> dict[str, Any]:
    """What Llama-like and Gemma models share: RMSNorm, rotary on whole heads, a gated MLP, GQA."""
    return {
        "d_model": hf.hidden_size,
        "d_head": d_head,
        "n_heads": hf.num_attention_heads,
        "n_key_value_heads": _kv_heads(hf),
        "d_mlp": hf.intermediate_size,
        "n_layers": hf.num_hidden_layers,
        "n_ctx": _context(hf),
        "eps": hf.rms_norm_eps,
        "d_vocab": hf.vocab_size,
        "act_fn": act_fn,
        "normalization_type": "RMS",
        "final_rms": True,
        "gated_mlp": True,
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": _rope_theta(hf),
        "rotary_adjacent_pairs": False,
    }


def _llama_like(hf: Any) -> dict[str, Any]:
    """Llama, Mistral, Qwen 2/2.5 and Qwen 3: RMSNorm, rotary, gated MLP, optional GQA."""
    d_head = _head_dim(hf)
    window = getattr(hf, "sliding_window", None) if getattr(hf, "use_sliding_window", True) else None
    return _rotary_rms(hf, d_head, hf.hidden_act) | {
        "use_local_attn": bool(window),
        "window_size": window or None,
        "attn_types": ["local"] * hf.num_hidden_layers if window else None,
        **_rope_scaling(hf),
    }


def _qwen(hf: Any) -> dict[str, Any]:
    return _llama_like(hf) | {"tokenizer_prepends_bos": True, "default_prepend_bos": False}


def _qwen3(hf: Any) -> dict[str, Any]:
    return _qwen(hf) | {"use_qk_norm": True}


def _gemma(hf: Any, qk_norm: bool) -> dict[str, Any]:
    """Gemma 2 and 3: RMSNorm with gain 1 + w (folded in by transformer-lens's converter), norms
    before and after each sublayer, embeddings scaled by sqrt(d_model), alternating local/global
    attention, soft-capping (Gemma 2), q/k norms and a separate local rope base (Gemma 3)."""
    attn_types = _attention_types(hf)
    config = _rotary_rms(hf, hf.head_dim, hf.hidden_activation) | {
        "use_normalization_before_and_after": True,
        "attn_scale": float(hf.query_pre_attn_scalar) ** 0.5,
        "use_local_attn": attn_types is not None,
        "window_size": hf.sliding_window if attn_types else None,
        "attn_types": attn_types,
        "attn_scores_soft_cap": getattr(hf, "attn_logit_softcapping", None) or -1.0,
        "output_logits_soft_cap": getattr(hf, "final_logit_softcapping", None) or -1.0,
    }
    if qk_norm:
        config |= {"use_qk_norm": True, "rotary_base_local": float(hf.rope_local_base_freq), **_rope_scaling(hf)}
    return config


_MAPPINGS = {
    "GPT2LMHeadModel": _gpt2,
    "GPTNeoXForCausalLM": _neox,
    "LlamaForCausalLM": _llama_like,
    "MistralForCausalLM": _llama_like,
    "Qwen2ForCausalLM": _qwen,
    "Qwen3ForCausalLM": _qwen3,
    "Gemma2ForCausalLM": lambda hf: _gemma(hf, qk_norm=False),
    "Gemma3ForCausalLM": lambda hf: _gemma(hf, qk_norm=True),
}
SUPPORTED_ARCHITECTURES = tuple(_MAPPINGS)


def hooked_config(hf_config: Any, architecture: str, device: str, dtype: torch.dtype) -> HookedTransformerConfig:
    """The HookedTransformerConfig of ``hf_config``; UnsupportedArchitecture names the supported list."""
    if architecture not in _MAPPINGS:
        raise UnsupportedArchitecture(
            f"unknown architecture '{architecture}': SAEscope loads {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    fields = {key: value for key, value in _MAPPINGS[architecture](hf_config).items() if value is not None}
    return HookedTransformerConfig(
        **fields,
        original_architecture=architecture,
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        init_weights=False,
        device=device,
        dtype=dtype,
    )
