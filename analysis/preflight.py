"""Checks of command-line input that need no model: argparse types, output paths, a model's context.

Torch-free and quick on purpose: every argument is checked here, before the CLI imports torch or
loads a model, corpus or SAE, so a typo costs a second, not a model load (or a killed process).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from analysis.errors import SAEscopeError

MAX_TOP_K = 1000
# Runs of more latents get approximate neighbours (faiss, analysis/atlas/faiss_neighbours.py): the
# exact scan's time grows as N^2 (about 2.5 CPU-minutes at 65k latents of width 768 on this project's
# CPU, 10 at 131k, 10 CPU-hours at 1M: docs/PERFORMANCE.md). Here, torch-free, for the CLI.
EXACT_NEIGHBOURS_UP_TO = 65_536
# Latents firing on more than 1% of tokens top every text search without saying anything about the
# text (on the demo atlas the unfiltered top hits have densities of 0.5 to 0.9 and no label): both
# ``search-text`` and the Search by text page start at this limit.
DEFAULT_MAX_DENSITY = 0.01
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length", "max_sequence_length")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ArgumentError(SAEscopeError, ValueError):
    """A command-line argument that cannot work, found before any work starts."""


def count(text: str) -> int:
    """A whole number as typed: ``4096``, ``4_096``, ``1e6`` (argparse type)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}")
    return int(value)


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type for a whole number in ``[low, high]``."""

    def parse(text: str) -> int:
        value = count(text)
        if value < low or (high is not None and value > high):
            span = f"from {low:,} to {high:,}" if high is not None else f"at least {low:,}"
            raise argparse.ArgumentTypeError(f"must be a whole number {span}, not {text}")
        return value

    return parse


def number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type for a finite number in ``[low, high]`` (``(low, high]`` when ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
        if not (low < value if low_open else low <= value) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low} and at most {high}")
        return value

    return parse


def device(text: str) -> str:
    """cpu, cuda, cuda:N, mps or auto (whether this machine has it is checked when torch loads)."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: use cpu, cuda, cuda:N or mps")
    return text


def spec(text: str) -> str:
    """A non-empty model, SAE or corpus spec."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a Hugging Face hub id or a local folder")
    return text


def output_file(path: Path, flag: str = "--out", overwrite: bool = False) -> None:
    """Refuse an output path that is a folder, has no parent folder, cannot be written or (without
    ``overwrite``) exists; a probe file is created and removed so that /proc, read-only mounts and
    missing permissions are found now rather than after the work."""
    if path.is_dir():
        raise ArgumentError(f"{flag} {path} is a folder; give a file path such as {path / 'atlas.duckdb'}")
    if path.exists() and not overwrite:
        raise ArgumentError(f"{flag} {path} exists; pass --overwrite to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise ArgumentError(f"{flag} {path}: the folder {parent} does not exist")
    probe = parent / f".{path.name}.{os.getpid()}.probe"
    try:
        probe.open("x").close()
        probe.unlink()
    except OSError as error:
        raise ArgumentError(f"{flag} {path}: cannot write in {parent} ({error.strerror or error})") from None


def model_config(model: str) -> dict | None:
    """The model's config.json (a local folder's, or a cached hub snapshot's), read without loading
    any weights; None when there is none to read (the model loader then says why)."""
    path = Path(model).expanduser()
    if path.is_dir():
        config = path / "config.json"
    elif not path.exists() and "/" in model and not model.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except Exception:  # an invalid repo id: the loader reports it
            return None
        config = Path(cached) if isinstance(cached, str) else None
    else:
        return None
    if config is None or not config.is_file():
        return None
    try:
        return json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArgumentError(f"{config} is not a readable JSON model config ({error})") from None


def model_context(model: str) -> int | None:
    """The longest input the model takes, from its config.json, or None when it does not say."""
    config = model_config(model) or {}
    for source in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            if isinstance(source.get(key), int) and source[key] > 0:
                return source[key]
    return None


def text(value: str, flag: str) -> str:
    """A text argument that must hold more than white space (``--prompt``, ``--text``)."""
    if not value.strip():
        raise ArgumentError(f"{flag} is empty: give some text")
    return value


def model_folder(model: str) -> Path:
    """The model's local folder (see analysis/model_files.py), or one line saying why there is none."""
    from analysis.model_files import resolve_model_path

    return resolve_model_path(model)


def sae_latents(specs: list[str]) -> dict[str, int | None]:
    """The SAEs that ``specs`` name, each with its number of latents from cfg.json where a local
    folder says it (None for a sae-lens ``release/sae_id``, known once loaded). No weights are read:
    the names and ranges a ``--feature`` may use are known before the model loads. A circuit-tracer
    transcoder configuration (config.yaml) names no SAEs here."""
    found: dict[str, int | None] = {}
    for spec in specs:
        folders = sae_folders(spec)
        if folders is None:
            found[spec] = None
        for folder in folders or []:
            found[folder.name] = _d_sae(folder / SAE_CONFIG)
    return found


def sae_folders(spec: str) -> list[Path] | None:
    """The SAE folders a spec names (none for a circuit-tracer configuration), or None for a
    sae-lens ``release/sae_id``."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        if path.exists() or spec.startswith((".", "/", "~")) or "/" not in spec:
            raise ArgumentError(f"SAE folder '{spec}' does not exist (or give a sae-lens release/sae_id)")
        return None
    if (path / TRANSCODER_CONFIG).exists() and not (path / SAE_CONFIG).exists():
        return []
    folders = [path] if _is_sae_folder(path) else sorted(child for child in path.iterdir() if _is_sae_folder(child))
    if not folders:
        raise ArgumentError(f"'{spec}' holds no SAE: expected {SAE_CONFIG} and {SAE_WEIGHTS}, here or in subfolders")
    return folders


SAE_CONFIG, SAE_WEIGHTS, TRANSCODER_CONFIG = "cfg.json", "sae_weights.safetensors", "config.yaml"


def _is_sae_folder(path: Path) -> bool:
    return (path / SAE_CONFIG).exists() and (path / SAE_WEIGHTS).exists()


def _d_sae(cfg_path: Path) -> int | None:
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArgumentError(f"{cfg_path} is not a readable JSON config ({error})") from None
    d_sae = cfg.get("d_sae") if isinstance(cfg, dict) else None
    return d_sae if isinstance(d_sae, int) and not isinstance(d_sae, bool) and d_sae > 0 else None


def latent_in(sae: str, latent: int, latents: dict[str, int | None], flag: str = "--feature") -> None:
    """Refuse a (SAE, latent) that the loaded SAEs will not have, as far as ``sae_latents`` knows."""
    if sae not in latents:
        raise ArgumentError(f"{flag}: no SAE called {sae!r} in --sae; there are {', '.join(latents) or 'none'}")
    d_sae = latents[sae]
    if d_sae is not None and latent >= d_sae:
        raise ArgumentError(f"{flag}: {sae} has no latent {latent}: its latents are numbered 0 to {d_sae - 1}")


def atlas_file(path: str | Path) -> None:
    """Refuse an atlas path that is not a finished atlas of this schema (opened read-only, then closed)."""
    from analysis.atlas.reader import open_atlas

    open_atlas(path).close()


def duckdb_files(paths: list[str]) -> None:
    """Refuse paths that are not readable DuckDB files (the partial atlases ``merge`` combines)."""
    import duckdb

    for path in map(Path, paths):
        if not path.is_file():
            raise ArgumentError(f"no atlas at {path}")
        try:
            duckdb.connect(str(path), read_only=True).close()
        except duckdb.Error as error:
            raise ArgumentError(f"{path} is not a readable DuckDB file (corrupt or not an atlas): {error}") from None
