"""What the live pages and commands load: a model spec and SAE specs, as an atlas records them or a
user gives them, and whether they are on this machine. Torch-free, so a page can say why it is off,
or start showing its loading progress, before torch is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.model_files import ModelLoadError, resolve_model_path
from analysis.paths import REPO_ROOT


@dataclass(frozen=True)
class LiveSpecs:
    """What to load: a model spec and SAE specs, as an atlas records them or a user gives them."""

    model: str
    saes: tuple[str, ...]

    @classmethod
    def from_atlas_meta(cls, meta: dict) -> LiveSpecs:
        """The model and SAEs an atlas was built from; specs inside this repository are recorded
        relative to its root, so they are resolved against it here."""
        sae_specs = tuple(dict.fromkeys(_in_repo(info["spec"]) for info in meta["saes"]))
        return cls(model=_in_repo(meta["model"]["spec"]), saes=sae_specs)

    def unavailable_reason(self) -> str | None:
        """Why these specs cannot be loaded on this machine (without loading any weights), or None."""
        try:
            resolve_model_path(self.model)
        except ModelLoadError as error:
            return f"the model is not available here: {error}"
        for spec in self.saes:
            path = Path(spec).expanduser()
            if spec.startswith((".", "/", "~")) and not path.exists():
                return f"the SAE folder {spec} is not available here"
        return None


def _in_repo(spec: str) -> str:
    candidate = REPO_ROOT / spec
    return str(candidate) if not Path(spec).is_absolute() and candidate.exists() else spec
