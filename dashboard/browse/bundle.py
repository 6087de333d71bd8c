"""What a model bundle holds, read from its files alone: no torch, no model load (browse pages stay fast)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from analysis.paths import DEMO_DIR as DEMO_BUNDLE


@dataclass
class SAECard:
    name: str
    architecture: str
    hook: str
    hook_out: str | None
    d_in: int
    d_sae: int
    quality: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "transcoder" if self.hook_out else "SAE"


@dataclass
class BundleCard:
    root: Path
    model_config: dict
    metrics: dict
    saes: list[SAECard]

    @property
    def model_name(self) -> str:
        """The name users know the model by: the bundle folder's name for a local bundle."""
        return f"{self.root.name} bundle model"


def read_bundle(root: Path = DEMO_BUNDLE) -> BundleCard:
    """Read the model config, build metrics and SAE configs of a bundle folder."""
    if not (root / "model" / "config.json").exists():
        raise FileNotFoundError(f"{root} is not a model bundle: it has no model/config.json")
    metrics_path = root / "build_metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    qualities = metrics.get("saes", {})
    saes = []
    for cfg_path in sorted((root / "saes").glob("*/cfg.json")):
        cfg = json.loads(cfg_path.read_text())
        meta = cfg.get("metadata", {})
        name = cfg_path.parent.name
        saes.append(
            SAECard(
                name=name,
                architecture=cfg["architecture"],
                hook=meta.get("hook_name", ""),
                hook_out=meta.get("hook_name_out"),
                d_in=cfg["d_in"],
                d_sae=cfg["d_sae"],
                quality=qualities.get(name, {}),
            )
        )
    return BundleCard(
        root=root, model_config=json.loads((root / "model" / "config.json").read_text()), metrics=metrics, saes=saes
    )
