"""``python -m analysis demo``: rebuild the demo bundle in ``data/demo/`` stage by stage.

Stages write their results to disk and later stages read them back, so a stage can be re-run
alone (``--stages saes,report``) without retraining what came before it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analysis.demo import corpus
from analysis.demo.corpus import DemoBuildError
from analysis.token_ids import special_token_id

if TYPE_CHECKING:  # the training code imports torch and sae-lens; only build_saes needs it, at call time
    from analysis.demo.sae_training import TrainingSettings

STAGES = ("tokenizer", "model", "saes", "report")
VOCAB_SIZE = 8192
EVAL_WINDOWS = 2048  # held-out windows of 128 tokens for firing statistics (about 260k tokens)
CE_WINDOWS = 128  # of which the first this many also measure CE loss recovered


class BundlePaths:
    """Where every artefact of the demo bundle lives; ``cache`` holds what is not committed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = root / "model"
        self.saes = root / "saes"
        self.manifest = root / "corpus_manifest.jsonl.gz"
        self.metrics = root / "build_metrics.json"
        self.cache = root / ".cache"
        self.train_tokens = self.cache / "train_tokens.npy"
        self.heldout_tokens = root / "heldout_tokens.npy"  # committed: the atlas and tests read it

    @contextlib.contextmanager
    def build_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the bundle so two builds never write it at once."""
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / "build.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DemoBuildError(f"another demo build is running on {self.root}; wait for it to finish") from None
            yield

    def read_metrics(self) -> dict:
        return json.loads(self.metrics.read_text()) if self.metrics.exists() else {}

    def write_metrics(self, update: dict) -> None:
        metrics = self.read_metrics() | update
        self.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def _write_streams(documents: list[corpus.Document], tokenizer, paths: BundlePaths) -> list[list[int]]:
    """Tokenise every document; write the train and held-out streams (documents joined by EOS)."""
    encoded = tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
    streams: dict[str, list[int]] = {"train": [], "heldout": []}
    for doc, ids in zip(documents, encoded):
        streams[doc.split].extend(ids + [tokenizer.eos_token_id])
    paths.cache.mkdir(parents=True, exist_ok=True)
    np.save(paths.train_tokens, np.asarray(streams["train"], dtype=np.uint16))
    np.save(paths.heldout_tokens, np.asarray(streams["heldout"], dtype=np.uint16))
    return encoded


def build_tokenizer_and_streams(paths: BundlePaths) -> None:
    """Extract the corpus, train the tokenizer, and write the token streams and manifest."""
    from analysis.demo.tokenizer import train_tokenizer

    documents = corpus.build_documents()
    train_texts = (d.text for d in documents if d.split == "train")
    tokenizer = train_tokenizer(train_texts, VOCAB_SIZE, paths.model)
    encoded = _write_streams(documents, tokenizer, paths)
    per_domain: dict[str, dict[str, int]] = {}
    for doc, ids in zip(documents, encoded):
        counts = per_domain.setdefault(doc.domain, {"documents": 0, "train": 0, "heldout": 0})
        counts["documents"] += 1
        counts[doc.split] += len(ids)
    corpus.write_manifest(documents, paths.manifest, [len(ids) for ids in encoded])
    paths.write_metrics({"corpus": per_domain, "vocab_size": len(tokenizer)})


def ensure_streams(paths: BundlePaths) -> tuple[np.ndarray, np.ndarray]:
    """The token streams, rebuilt from the Debian sources if the cache is gone (checked against the manifest)."""
    if not paths.train_tokens.exists():
        from transformers import AutoTokenizer

        documents = corpus.build_documents()
        corpus.verify_manifest(documents, paths.manifest)
        _write_streams(documents, AutoTokenizer.from_pretrained(paths.model), paths)
    return np.load(paths.train_tokens), np.load(paths.heldout_tokens)


def build_model(paths: BundlePaths, minutes: float) -> None:
    from transformers import AutoTokenizer

    from analysis.demo.lm_training import LMSettings, train_language_model

    train, heldout = ensure_streams(paths)
    tokenizer = AutoTokenizer.from_pretrained(paths.model)
    report = train_language_model(tokenizer, train, heldout, paths.model, LMSettings(minutes=minutes))
    paths.write_metrics({"model": report})


def build_saes(paths: BundlePaths, settings: TrainingSettings | None = None, only: set[str] | None = None) -> None:
    """Cache activations of the trained model once, then train every demo SAE and transcoder."""
    from analysis.demo.sae_training import (
        TrainingSettings,
        collect_activations,
        context_windows,
        demo_dictionaries,
        train_dictionary,
    )
    from analysis.model_loading import load_model

    settings = settings or TrainingSettings()
    train, _ = ensure_streams(paths)
    loaded = load_model(str(paths.model), device="cpu")
    tokenizer = loaded.model.tokenizer
    specs = [s for s in demo_dictionaries(loaded.model.cfg.n_layers) if only is None or s.name in only]
    hooks = sorted({s.hook_in for s in specs} | {s.hook_out for s in specs if s.hook_out})
    n_windows = settings.activation_tokens // (settings.context - 1)
    windows = context_windows(train, n_windows, settings.context, special_token_id(tokenizer, "bos"), settings.seed)
    activations = collect_activations(loaded.model, windows, hooks, special_token_ids(tokenizer))
    del loaded
    for spec in specs:
        train_dictionary(spec, activations, "glassbox-demo-gpt2", paths.saes, settings)
    learning_rates = paths.read_metrics().get("sae_training", {}).get("learning_rates", {})
    learning_rates.update({spec.name: spec.lr or settings.lr for spec in specs})
    paths.write_metrics(
        {
            "sae_training": {
                "activation_tokens": len(next(iter(activations.values()))),
                "training_tokens_per_sae": settings.training_tokens,
                "batch_size": settings.batch_size,
                "learning_rates": learning_rates,
            }
        }
    )


def special_token_ids(tokenizer) -> list[int]:
    """Ids of BOS/EOS/pad and any other special token: never counted as firing, never examples."""
    return sorted(set(tokenizer.all_special_ids))


def evaluate_bundle(paths: BundlePaths) -> None:
    """Measure the bundle's SAEs on held-out text and sample generations per domain."""
    from analysis.demo.report import generations_per_domain
    from analysis.demo.sae_training import context_windows
    from analysis.model_loading import load_model
    from analysis.sae_loading import check_fits, load_saes
    from analysis.sae_metrics import evaluate_saes

    _, heldout = ensure_streams(paths)
    loaded = load_model(str(paths.model), device="cpu")
    saes = load_saes(str(paths.saes))
    check_fits(loaded.model, saes)
    tokenizer = loaded.model.tokenizer
    windows = context_windows(heldout, EVAL_WINDOWS, 128, special_token_id(tokenizer, "bos"), seed=1)
    qualities = evaluate_saes(loaded.model, saes, windows, special_token_ids(tokenizer), ce_windows=CE_WINDOWS)
    paths.write_metrics(
        {
            "saes": {q.name: q.as_dict() for q in qualities},
            "sae_eval_tokens": qualities[0].tokens,
            "sae_ce_eval_tokens": qualities[0].ce_tokens,
            "generations": generations_per_domain(loaded.model),
        }
    )
