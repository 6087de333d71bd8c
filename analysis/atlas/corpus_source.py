"""Turn a corpus spec into one token stream cut into context windows, remembering each document.

A corpus spec is ``demo`` (the demo bundle's committed held-out stream), a folder of text files,
a JSONL file with a ``text`` field, or the name of a Hugging Face dataset already in the local
cache. Documents are joined by EOS into one stream; window ``w`` is BOS followed by the stream's
tokens ``[w * (context - 1), (w + 1) * (context - 1))``, so a window id alone says which tokens it
holds and where they came from, in every shard and every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis.demo import corpus as demo_corpus
from analysis.errors import SAEscopeError
from analysis.paths import DEMO_DIR as DEMO_ROOT

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}


class CorpusError(SAEscopeError, ValueError):
    """A corpus spec that cannot be read, or gives no tokens."""


@dataclass
class CorpusTokens:
    """A tokenised corpus: the stream, and for each document its id, domain, source and span."""

    spec: str
    stream: np.ndarray  # int64 token ids, documents joined by EOS
    doc_ids: list[str]
    doc_domains: list[str]
    doc_sources: list[str]
    doc_starts: np.ndarray  # stream offset of each document's first token

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.stream.astype(np.int64).tobytes())
        digest.update("\n".join(self.doc_ids).encode())
        return digest.hexdigest()

    def n_windows(self, context: int) -> int:
        return len(self.stream) // (context - 1)

    def windows(self, ids: np.ndarray, context: int, bos_id: int) -> torch.Tensor:
        """Token windows ``ids`` ([n] window ids) as [n, context] int64, each starting with BOS."""
        body = context - 1
        offsets = ids[:, None] * body + np.arange(body)[None, :]
        tokens = np.concatenate([np.full((len(ids), 1), bos_id), self.stream[offsets]], axis=1)
        return torch.from_numpy(tokens.astype(np.int64))

    def document_of(self, ids: np.ndarray, positions: np.ndarray, context: int) -> np.ndarray:
        """Index of the document holding token ``positions`` of windows ``ids`` (BOS counts as the first token)."""
        stream_pos = ids * (context - 1) + np.maximum(positions - 1, 0)
        return np.searchsorted(self.doc_starts, stream_pos, side="right") - 1


def _join(
    spec: str, texts: list[str], ids: list[str], domains: list[str], sources: list[str], tokenizer
) -> CorpusTokens:
    if not texts:
        raise CorpusError(f"corpus {spec!r} holds no documents")
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = [len(e) + (eos is not None) for e in encoded]
    stream = np.fromiter(
        (t for e in encoded for t in (e + [eos] if eos is not None else e)), dtype=np.int64, count=sum(lengths)
    )
    if len(stream) == 0:
        raise CorpusError(f"corpus {spec!r} has no tokens: every document is empty")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return CorpusTokens(spec, stream, ids, domains, sources, starts)


def _demo(tokenizer) -> CorpusTokens:
    """The demo bundle's held-out split, already tokenised with the demo tokenizer."""
    demo_tokenizer = (DEMO_ROOT / "model" / "tokenizer.json").read_text()
    if tokenizer.backend_tokenizer.to_str() != _normalised_tokenizer(demo_tokenizer):
        raise CorpusError(
            "the demo corpus is stored as demo-tokenizer ids; for another model give a folder or JSONL file"
        )
    rows = [r for r in demo_corpus.read_manifest(DEMO_ROOT / "corpus_manifest.jsonl.gz") if r["split"] == "heldout"]
    stream = np.load(DEMO_ROOT / "heldout_tokens.npy").astype(np.int64)
    lengths = np.array([r["tokens"] + 1 for r in rows])  # each document is followed by EOS
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return CorpusTokens(
        "demo", stream, [r["doc_id"] for r in rows], [r["domain"] for r in rows], [r["source"] for r in rows], starts
    )


def _normalised_tokenizer(serialised: str) -> str:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(serialised).to_str()


def _folder(root: Path, tokenizer) -> CorpusTokens:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    rel = [p.relative_to(root) for p in files]
    domains = [r.parts[0] if len(r.parts) > 1 else root.name for r in rel]
    return _join(str(root), texts, [str(r) for r in rel], domains, [str(r) for r in rel], tokenizer)


def _jsonl(path: Path, tokenizer) -> CorpusTokens:
    texts, ids, domains = [], [], []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts.append(str(row["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CorpusError(f"{path}:{number}: every line must be a JSON object with a 'text' field") from None
            ids.append(str(row.get("id", number)))
            domains.append(str(row.get("domain", row.get("source", path.stem))))
    return _join(str(path), texts, ids, domains, [f"{path.name}:{i}" for i in ids], tokenizer)


def _hf_dataset(name: str, tokenizer) -> CorpusTokens:
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets

    try:
        dataset = datasets.load_dataset(name, split="train")
    except Exception as error:  # datasets raises many types when a name is not cached
        raise CorpusError(
            f"corpus {name!r} is not a folder, a .jsonl file, or a Hugging Face dataset available offline ({error})"
        ) from None
    if "text" not in dataset.column_names:
        raise CorpusError(f"dataset {name!r} has no 'text' column (columns: {dataset.column_names})")
    texts = [str(t) for t in dataset["text"]]
    ids = [str(i) for i in range(len(texts))]
    return _join(name, texts, ids, [name] * len(texts), [f"{name}[{i}]" for i in ids], tokenizer)


def load_corpus(spec: str, tokenizer) -> CorpusTokens:
    """Read and tokenise the corpus named by ``spec`` with the model's tokenizer."""
    if spec == "demo":
        return _demo(tokenizer)
    path = Path(spec)
    if path.is_dir():
        return _folder(path, tokenizer)
    if path.is_file() and path.suffix == ".jsonl":
        return _jsonl(path, tokenizer)
    if path.exists():
        raise CorpusError(f"corpus {spec!r} is a file but not .jsonl; give a folder of text files or a JSONL file")
    return _hf_dataset(spec, tokenizer)
