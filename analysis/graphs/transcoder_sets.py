"""circuit-tracer's own transcoder formats for graphs, loaded by circuit-tracer's own loaders: a
per-layer transcoder set or a cross-layer transcoder (CLT), described by the ``config.yaml`` that
circuit-tracer's ``from_pretrained`` reads (``model_kind``, ``feature_input_hook``,
``feature_output_hook``, ``scan``, and ``transcoders`` for a set), from a folder or from a hub repo
already in the local Hugging Face cache.

Why not ``circuit_tracer.utils.hf_utils.load_transcoders``: it resolves files with
``snapshot_download`` / ``hf://`` downloads, which reach for the network; here the folder is
resolved offline first and the per-format loaders (``load_transcoder_set``, ``load_clt``) are
called on it, with every weight loaded eagerly in float32 (the live model's precision).
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from analysis.errors import SAEscopeError

CONFIG = "config.yaml"
KINDS = ("transcoder_set", "cross_layer_transcoder")


class TranscoderSetError(SAEscopeError, ValueError):
    """A circuit-tracer transcoder configuration that cannot be loaded or does not fit the model."""


def config_folder(spec: str) -> Path | None:
    """The folder holding circuit-tracer's ``config.yaml`` that ``spec`` names (a folder, or a hub
    id whose snapshot is in the local cache), or None when ``spec`` is not such a configuration."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path if (path / CONFIG).exists() else None
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / CONFIG).exists() else None


def load_transcoders(folder: Path, device: str):
    """circuit-tracer's TranscoderSet or CrossLayerTranscoder for the configuration in ``folder``."""
    try:
        config = yaml.safe_load((folder / CONFIG).read_text())
    except yaml.YAMLError as error:
        raise TranscoderSetError(f"{folder / CONFIG} is not valid YAML: {error}") from error
    kind = config.get("model_kind") if isinstance(config, dict) else None
    if kind not in KINDS:
        raise TranscoderSetError(f"{folder / CONFIG}: model_kind must be one of {', '.join(KINDS)}, not {kind!r}")
    hooks = {key: config.get(key) for key in ("feature_input_hook", "feature_output_hook")}
    missing = [key for key, value in hooks.items() if not value]
    if missing:
        raise TranscoderSetError(f"{folder / CONFIG} does not say {', '.join(missing)}")
    scan = config.get("scan") or folder.name
    options = {"device": torch.device(device), "dtype": torch.float32, "lazy_encoder": False, "lazy_decoder": False}
    if kind == "cross_layer_transcoder":
        from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

        if not list(folder.glob("W_enc_*.safetensors")):
            raise TranscoderSetError(f"cross-layer transcoder {folder} has no W_enc_*.safetensors files")
        return load_clt(str(folder), scan=scan, **hooks, **options)
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    paths = config.get("transcoders") or sorted(
        (str(p) for p in folder.glob("layer_*.safetensors")), key=lambda p: int(Path(p).stem.split("_")[1])
    )
    resolved = {layer: str(folder / path) for layer, path in enumerate(paths)}
    absent = [path for path in resolved.values() if not Path(path).exists()]
    if not resolved or absent:
        raise TranscoderSetError(f"transcoder set {folder}: missing files {absent or ['layer_*.safetensors']}")
    return load_transcoder_set(resolved, scan=scan, **hooks, **options)


def layer_names(transcoders) -> list[str]:
    """One name per layer for graph nodes: a set's per-layer scan names, or 'SCAN (layer L)'."""
    scan = transcoders.scan
    n_layers = transcoders.n_layers
    if isinstance(scan, list) and len(scan) == n_layers:
        return [str(name) for name in scan]
    return [f"{scan} (layer {layer})" for layer in range(n_layers)]


def check_transcoders_fit(transcoders, model) -> None:
    """TranscoderSetError unless the transcoders cover every layer of ``model`` at its width."""
    n_layers = transcoders.n_layers
    d_model = getattr(transcoders, "d_model", None) or transcoders.transcoders[0].d_model
    if n_layers != model.cfg.n_layers or d_model != model.cfg.d_model:
        raise TranscoderSetError(
            f"transcoders {transcoders.scan!r} are for {n_layers} layers of width {d_model}; this model has "
            f"{model.cfg.n_layers} layers of width {model.cfg.d_model}"
        )
    for hook in (transcoders.feature_input_hook, transcoders.feature_output_hook):
        if f"blocks.0.{hook}" not in model.hook_dict:
            raise TranscoderSetError(f"transcoders {transcoders.scan!r} use hook {hook!r}, which this model lacks")


def describe(transcoders, spec: str) -> dict:
    """What ``info`` prints for a circuit-tracer configuration: one entry for the whole set or CLT."""
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

    clt = isinstance(transcoders, CrossLayerTranscoder)
    d_model = transcoders.d_model if clt else transcoders.transcoders[0].d_model
    return {
        "name": str(transcoders.scan) if isinstance(transcoders.scan, str) else Path(spec).name,
        "spec": spec,
        "architecture": KINDS[1] if clt else KINDS[0],
        "kind": "cross-layer transcoder" if clt else "transcoder set",
        "hook": f"blocks.*.{transcoders.feature_input_hook}",
        "hook_out": f"blocks.*.{transcoders.feature_output_hook}",
        "d_in": d_model,
        "d_sae": transcoders.d_transcoder,
        "n_layers": transcoders.n_layers,
    }


def as_sae_lens(transcoders, spec: str) -> list:
    """A transcoder set's per-layer transcoders as sae-lens transcoders (LoadedSAE, named as graph
    nodes name them), so that precompute, steering and search read them like any other; the weights
    are the set's own tensors (views, no copy). A CLT has no per-layer equivalent (its features
    write to every later layer), so it is refused with one line.

    circuit-tracer's JumpReLU is ``x * (x > t)`` and sae-lens's ``relu(x) * (x > t)``: equal for
    the non-negative thresholds transcoders are trained with; a negative one is refused."""
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import (
        JumpReLUSkipTranscoder,
        JumpReLUSkipTranscoderConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        SkipTranscoder,
        SkipTranscoderConfig,
        Transcoder,
        TranscoderConfig,
    )

    from analysis.sae_loading import LoadedSAE

    if isinstance(transcoders, CrossLayerTranscoder):
        raise TranscoderSetError(
            f"{spec} is a cross-layer transcoder: it makes graphs (saescope graph), but precompute, steer and "
            "search need per-layer SAEs or transcoders"
        )
    loaded = []
    for layer, (name, tc) in enumerate(zip(layer_names(transcoders), transcoders.transcoders)):
        jump = isinstance(tc.activation_function, JumpReLU)
        if not jump and tc.activation_function is not torch.nn.functional.relu:
            raise TranscoderSetError(
                f"{spec}: layer {layer}'s activation {tc.activation_function!r} has no sae-lens twin"
            )
        skip = tc.W_skip is not None
        config_class, sae_class = {
            (False, False): (TranscoderConfig, Transcoder),
            (False, True): (SkipTranscoderConfig, SkipTranscoder),
            (True, False): (JumpReLUTranscoderConfig, JumpReLUTranscoder),
            (True, True): (JumpReLUSkipTranscoderConfig, JumpReLUSkipTranscoder),
        }[(jump, skip)]
        metadata = SAEMetadata(
            hook_name=f"blocks.{layer}.{transcoders.feature_input_hook}",
            hook_name_out=f"blocks.{layer}.{transcoders.feature_output_hook}",
        )
        cfg = config_class(
            d_in=tc.d_model,
            d_sae=tc.d_transcoder,
            d_out=tc.d_model,
            apply_b_dec_to_input=False,
            device=str(tc.b_dec.device),
            metadata=metadata,
        )
        state = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
        if jump:
            if (tc.activation_function.threshold < 0).any():
                raise TranscoderSetError(f"{spec}: layer {layer} has negative JumpReLU thresholds")
            state["threshold"] = tc.activation_function.threshold
        if skip:
            state["W_skip"] = tc.W_skip
        sae = sae_class(cfg)
        sae.load_state_dict({key: value.detach() for key, value in state.items()}, assign=True)
        loaded.append(LoadedSAE(name=name, spec=spec, sae=sae))
    return loaded
