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
