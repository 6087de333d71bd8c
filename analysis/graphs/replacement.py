"""circuit-tracer's replacement model, built from the live model and its per-layer transcoders with
no download: circuit-tracer's own loaders fetch models and transcoders from the Hugging Face hub, so
the weights already loaded by ``load_live`` are handed to it instead.

Built once per LiveModel and kept for the life of the process: the replacement model shares the live
model's weight storage (no copy), but wrapping it costs a second or so that every graph would pay.
"""

from __future__ import annotations

import atexit
import copy
import re
import weakref
from collections.abc import Collection

import torch
from circuit_tracer.replacement_model.replacement_model_transformerlens import TransformerLensReplacementModel
from circuit_tracer.transcoder import SingleLayerTranscoder, TranscoderSet
from circuit_tracer.transcoder.activation_functions import JumpReLU

from analysis.errors import SAEscopeError
from analysis.live_model import LiveModel
from analysis.sae_capabilities import Capability, missing
from analysis.sae_loading import LoadedSAE

_LAYER_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
# circuit-tracer wraps these modules, which renames their weights in the state dict.
_WRAPPED = (".old_mlp", ".old_unembed")
_cache: dict[int, TransformerLensReplacementModel] = {}
# Dropped before interpreter teardown: circuit-tracer's __del__ fails once torch's globals are gone.
atexit.register(_cache.clear)


class GraphSetupError(SAEscopeError, ValueError):
    """The loaded transcoders cannot make a replacement model, with a message that says why."""


def _split_hook(hook: str | None, name: str) -> tuple[int, str]:
    match = _LAYER_HOOK.match(hook or "")
    if not match:
        raise GraphSetupError(f"transcoder {name!r} uses hook {hook!r}, which is not inside a layer (blocks.L....)")
    return int(match.group(1)), match.group(2)


def layer_transcoders(live: LiveModel, names: Collection[str] | None = None) -> list[LoadedSAE]:
    """The live model's transcoders (of those called ``names``, if given: e.g. the ones an atlas
    describes) in layer order, exactly one per layer, all reading and writing the same hook of their
    layer: what circuit-tracer's per-layer replacement needs."""
    by_layer: dict[int, LoadedSAE] = {}
    hooks: set[tuple[str, str]] = set()
    for loaded in live.saes.values():
        if not loaded.is_transcoder or (names is not None and loaded.name not in names):
            continue
        layer, hook_in = _split_hook(loaded.hook_name, loaded.name)
        layer_out, hook_out = _split_hook(loaded.hook_name_out, loaded.name)
        if layer_out != layer:
            raise GraphSetupError(f"transcoder {loaded.name!r} reads layer {layer} but writes layer {layer_out}")
        if layer in by_layer:
            raise GraphSetupError(f"two transcoders for layer {layer}: {by_layer[layer].name!r} and {loaded.name!r}")
        by_layer[layer] = loaded
        hooks.add((hook_in, hook_out))
    n_layers = live.model.cfg.n_layers
    missing = sorted(set(range(n_layers)) - set(by_layer))
    if missing:
        raise GraphSetupError(
            f"attribution graphs need a transcoder at every layer; layers {missing} of {n_layers} have none"
        )
    if len(hooks) > 1:
        raise GraphSetupError(f"transcoders read/write different hooks across layers: {sorted(hooks)}")
    return [by_layer[layer] for layer in range(n_layers)]


def to_single_layer(loaded: LoadedSAE, layer: int, width: int) -> SingleLayerTranscoder:
    """A sae-lens transcoder as circuit-tracer's SingleLayerTranscoder, padded to ``width`` latents.

    circuit-tracer stacks every layer's activations into one tensor, so all layers need the same
    number of latents; the padding latents have a zero encoder row and bias and a positive
    threshold, so they never fire and never become nodes. Latent ids below ``d_sae`` are unchanged.
    """
    cfg = loaded.sae.cfg
    problem = missing(loaded, Capability.GRAPH_COMPATIBLE)
    if problem:
        raise GraphSetupError(problem)
    weights = {name: tensor.detach().float() for name, tensor in loaded.sae.state_dict().items()}
    pad = width - cfg.d_sae
    d_in = cfg.d_in

    def padded(tensor: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        return torch.cat([tensor, tensor.new_full((pad, *tensor.shape[1:]), fill)])

    params = {
        "W_enc": padded(weights["W_enc"].T.contiguous()),
        "W_dec": padded(weights["W_dec"]),
        "b_enc": padded(weights["b_enc"]),
        "b_dec": weights["b_dec"],
    }
    activation = torch.nn.functional.relu
    if "threshold" in weights:
        # sae-lens computes relu(x) * (x > t); circuit-tracer computes x * (x > t). They agree
        # when t >= 0, and clamping a negative t to 0 changes nothing in sae-lens's formula.
        threshold = padded(weights["threshold"].clamp(min=0.0), fill=1.0)
        params["activation_function.threshold"] = threshold
        activation = JumpReLU(threshold, bandwidth=0.1)
    transcoder = SingleLayerTranscoder(d_in, width, activation, layer, device=torch.device("cpu"), dtype=torch.float32)
    transcoder.load_state_dict(params)
    return transcoder


def transcoder_set(transcoders: list[LoadedSAE]) -> TranscoderSet:
    """circuit-tracer's TranscoderSet for transcoders given in layer order."""
    width = max(loaded.d_sae for loaded in transcoders)
    _, hook_in = _split_hook(transcoders[0].hook_name, transcoders[0].name)
    _, hook_out = _split_hook(transcoders[0].hook_name_out, transcoders[0].name)
    return TranscoderSet(
        {layer: to_single_layer(loaded, layer, width) for layer, loaded in enumerate(transcoders)},
        feature_input_hook=hook_in,
        feature_output_hook=hook_out,
        scan=[loaded.name for loaded in transcoders],
    )


def build_replacement_model(live: LiveModel) -> TransformerLensReplacementModel:
    """A replacement model that computes exactly what ``live.model`` computes (same weights,
    shared rather than copied) with the transcoders' hooks and gradient freezes installed: the
    circuit-tracer transcoder set or CLT loaded with the model if there is one, else its sae-lens
    per-layer transcoders."""
    source = live.model
    transcoders = live.circuit_transcoders or transcoder_set(layer_transcoders(live))
    with torch.device("meta"):
        model = TransformerLensReplacementModel.from_config(
            copy.deepcopy(source.cfg), transcoders, tokenizer=source.tokenizer, move_to_device=False
        )
    weights = source.state_dict()
    state = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("transcoders."):
            state[name] = tensor
        else:
            state[name] = weights[_source_name(name)]
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model


def _source_name(name: str) -> str:
    for wrapper in _WRAPPED:
        name = name.replace(wrapper, "")
    return name


def replacement_model(live: LiveModel) -> TransformerLensReplacementModel:
    """The replacement model of ``live``, built on first use and kept while ``live`` lives."""
    key = id(live)
    if key not in _cache:
        _cache[key] = build_replacement_model(live)
        weakref.finalize(live, _cache.pop, key, None)
    return _cache[key]
