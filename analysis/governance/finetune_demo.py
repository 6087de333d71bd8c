"""``saescope watch finetune-demo``: fine-tune the demo model on one domain of the demo corpus.

The model-diffing case of a watchlist (docs/GOVERNANCE.md) needs a second checkpoint whose
difference from the demo model is known: the same GPT-2 trained further on one domain only (the
KJV Bible, say). The text comes from the committed held-out stream (``data/demo/heldout_tokens.npy``
with the manifest's per-document domains), so no Debian package is needed: the domain's documents
are split by their index, even ones for training and odd ones kept out (to measure the domain loss
and to draw a watchlist's probe texts from). Training is a fixed number of steps with one seed, so
the same command gives the same weights on the same machine; ``--minutes`` only caps the time.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.errors import SAEscopeError
from analysis.paths import DEMO_MODEL

if TYPE_CHECKING:  # numpy and torch are imported when training starts: `saescope --help` stays light
    import numpy as np

DOMAINS = ("bible", "python-docs", "linux-docs", "fortunes", "dictionary")
RECORD_FILE = "finetune.json"


class FinetuneError(SAEscopeError, ValueError):
    """A fine-tuning setting or output folder that cannot work."""


@dataclass(frozen=True)
class FinetuneSettings:
    domain: str
    steps: int = 300
    minutes: float = 10.0
    seed: int = 0
    lr: float = 3e-4
    batch_size: int = 8
    context: int = 128

    def check(self) -> None:
        if self.domain not in DOMAINS:
            raise FinetuneError(f"unknown domain {self.domain!r}; the demo corpus has {', '.join(DOMAINS)}")
        if not 0 < self.lr <= 1:
            raise FinetuneError(f"the learning rate must be above 0 and at most 1, not {self.lr}")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that holds something other than a model (or, without ``overwrite``, anything)."""
    if out.exists() and not out.is_dir():
        raise FinetuneError(f"--out {out} is a file; give a folder for the checkpoint")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FinetuneError(f"--out {out} is not empty; pass --overwrite to replace the checkpoint there")
        if not (out / RECORD_FILE).exists():
            raise FinetuneError(f"--out {out} holds files that are not a fine-tuned checkpoint; not replacing them")
    if not out.parent.is_dir():
        raise FinetuneError(f"--out {out}: the folder {out.parent} does not exist")


def domain_documents(domain: str, tokenizer) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The domain's held-out documents as token arrays: (even-numbered: training, odd-numbered: kept out)."""
    import numpy as np

    from analysis.atlas.corpus_source import load_corpus

    corpus = load_corpus("demo", tokenizer)
    ends = np.append(corpus.doc_starts[1:], len(corpus.stream))
    docs = [
        corpus.stream[start:end]
        for start, end, doc_domain in zip(corpus.doc_starts, ends, corpus.doc_domains)
        if doc_domain == domain
    ]
    return docs[0::2], docs[1::2]


def _windows(docs: list[np.ndarray], n: int, context: int, bos: int, rng: np.random.Generator):
    import numpy as np

    from analysis.demo.lm_training import sample_windows

    return sample_windows(np.concatenate(docs), n, context, bos, rng)


def finetune(settings: FinetuneSettings, out: Path, base: Path = DEMO_MODEL) -> dict:
    """Train ``base`` further on the domain, save it (weights + tokenizer) in ``out`` with a record
    of how (``finetune.json``), and return that record."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from analysis.demo.lm_training import heldout_windows, mean_loss
    from analysis.token_ids import special_token_id

    settings.check()
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = GPT2LMHeadModel.from_pretrained(base, local_files_only=True)
    bos = special_token_id(tokenizer, "bos")
    train_docs, kept_docs = domain_documents(settings.domain, tokenizer)
    evaluation = heldout_windows(np.concatenate(kept_docs), settings.context, bos, limit=64)
    loss_before = mean_loss(model, evaluation)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    model.train()
    started, steps, loss = time.perf_counter(), 0, float("nan")
    warmup = max(1, settings.steps // 10)  # a fresh optimizer's first steps are its largest: ramp up
    while steps < settings.steps and time.perf_counter() - started < settings.minutes * 60:
        for group in optimizer.param_groups:
            group["lr"] = settings.lr * min(1.0, (steps + 1) / warmup)
        batch = _windows(train_docs, settings.batch_size, settings.context, bos, rng)
        loss_tensor = model(batch, labels=batch).loss
        loss_tensor.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        steps, loss = steps + 1, loss_tensor.item()
    seconds = time.perf_counter() - started
    record = {
        "base": str(base),
        "settings": asdict(settings),
        "steps_done": steps,
        "train_seconds": round(seconds, 1),
        "train_tokens": int(sum(len(d) for d in train_docs)),
        "final_train_loss": round(loss, 4),
        "domain_loss_before": round(loss_before, 4),
        "domain_loss_after": round(mean_loss(model, evaluation), 4),
        "domain_eval_tokens": int(evaluation[:, 1:].numel()),
    }
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record
