"""Which local folder a model spec names (a folder with config.json, or a hub id's snapshot in the
local Hugging Face cache), found without reading any weights. Torch-free, so the CLI refuses a
missing model before it imports torch, and pages say why a model is unavailable without loading it."""

from __future__ import annotations

import re
from pathlib import Path

from analysis.errors import SAEscopeError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelLoadError(SAEscopeError, ValueError):
    """A model spec that cannot be loaded, with a message that says what to do."""


def resolve_model_path(spec: str) -> Path:
    """The local folder a model spec names: the folder itself, or a hub id's cached snapshot."""
    path = Path(spec).expanduser()
    if not spec.strip():
        raise ModelLoadError("the model spec is empty: give a Hugging Face hub id or a local folder")
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"'{spec}' is a folder but has no config.json: it is not a Hugging Face model folder")
        return path
    if path.exists():
        raise ModelLoadError(f"'{spec}' is a file; give the model's folder (with config.json) or a hub id")
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"model folder '{spec}' does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        raise ModelLoadError(
            f"model '{spec}' is not available offline: download it first or give a local folder "
            f"(to download: huggingface-cli download {spec})"
        ) from error
