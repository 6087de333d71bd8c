"""The installed versions of the libraries behind a recorded result (detectors, watch runs, evidence
packs), read from package metadata: nothing is imported, so a torch-free command stays torch-free."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Python's version and each named distribution's ("not installed" where it is not)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
