"""Which torch device live work runs on: CUDA when there is one, else the CPU, unless told otherwise."""

from __future__ import annotations

import torch

from analysis.errors import SAEscopeError


class DeviceError(SAEscopeError, ValueError):
    """A requested device that this machine does not have."""


def pick_device(requested: str | None = None) -> str:
    """Return ``requested`` if this machine has it, else the best available device."""
    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device '{requested}' was asked for, but torch sees no CUDA device here; use --device cpu")
    if requested.startswith("mps") and not torch.backends.mps.is_available():
        raise DeviceError(f"device '{requested}' was asked for, but this machine has no MPS device")
    if requested.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device '{requested}': use cpu, cuda, cuda:N or mps")
    return requested
