"""Turn a corpus spec into one token stream cut into context windows, remembering each document.

A corpus spec is ``demo`` (the demo bundle's committed held-out stream), a folder of text files,
a JSONL file with a ``text`` field, or the name of a Hugging Face dataset already in the local
cache. Documents are joined by EOS into one stream; window ``w`` is BOS followed by the stream's
tokens ``[w * (context - 1), (w + 1) * (context - 1))``, so a window id alone says which tokens it
holds and where they came from, in every shard and every run.

Reading is lazy: documents are read and tokenised in order only until the stream holds the
tokens asked for, so a 4,096-token run over a large corpus reads its first few documents, and
the stream (and its content hash) is that prefix, the same in every shard, merge and check of a run
(the demo corpus is stored tokenised and is read whole).
Problems are reported with file and line: a ``text`` that is not a string is refused, undecodable
bytes are replaced and counted (refused with ``strict``), empty documents are skipped and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from analysis.errors import SAEscopeError

if TYPE_CHECKING:  # torch is imported when windows are cut, so argument checks stay quick
    import torch

from analysis.paths import DEMO_DIR as DEMO_ROOT

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
TOKENISE_BATCH = 64  # documents per tokenizer call: large enough for the fast tokenizer, small enough to stop early
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of each undecodable byte


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
    exhausted: bool = True  # the whole corpus was read (it holds no more tokens than the stream)
    notices: list[str] = field(default_factory=list)  # problems met while reading, one line each

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256(self.stream.astype(np.int64).tobytes())
        digest.update("\n".join(self.doc_ids).encode())
        return digest.hexdigest()

    def n_windows(self, context: int) -> int:
        return len(self.stream) // (context - 1)

    def windows(self, ids: np.ndarray, context: int, bos_id: int) -> torch.Tensor:
        """Token windows ``ids`` ([n] window ids) as [n, context] int64, each starting with BOS."""
        import torch

        body = context - 1
        offsets = ids[:, None] * body + np.arange(body)[None, :]
        tokens = np.concatenate([np.full((len(ids), 1), bos_id), self.stream[offsets]], axis=1)
        return torch.from_numpy(tokens.astype(np.int64))

    def document_of(self, ids: np.ndarray, positions: np.ndarray, context: int) -> np.ndarray:
        """Index of the document holding token ``positions`` of windows ``ids`` (BOS counts as the first token)."""
        stream_pos = ids * (context - 1) + np.maximum(positions - 1, 0)
        return np.searchsorted(self.doc_starts, stream_pos, side="right") - 1


@dataclass(frozen=True)
class _Document:
    text: str
    doc_id: str
    domain: str
    source: str
    where: str  # file and line (or row) for messages


@dataclass
class _Problems:
    """Undecodable bytes and empty documents met while reading, reported once at the end."""

    spec: str
    strict: bool
    unit: str = "line"  # what a place is: a JSONL line or a file of a folder
    bad_bytes: int = 0
    bad_places: int = 0
    first_bad: str = ""
    empty: int = 0
    first_empty: str = ""

    def decode(self, data: bytes, where: str) -> str:
        """``data`` as UTF-8, each undecodable byte counted and replaced by U+FFFD (refused when strict)."""
        text = data.decode("utf-8", errors="surrogateescape")
        bad = len(_UNDECODABLE.findall(text))
        if not bad:
            return text
        if self.strict:
            raise CorpusError(f"{where}: not UTF-8 ({_n(bad, 'undecodable byte')}); --strict refuses it")
        self.bad_bytes += bad
        self.bad_places += 1
        self.first_bad = self.first_bad or where
        return _UNDECODABLE.sub("\ufffd", text)

    def notices(self) -> list[str]:
        found = []
        if self.bad_bytes:
            found.append(
                f"corpus {self.spec!r}: {_n(self.bad_bytes, 'undecodable byte')} in {_n(self.bad_places, self.unit)} "
                f"replaced by U+FFFD (first at {self.first_bad}); pass --strict to refuse them"
            )
        if self.empty:
            found.append(
                f"corpus {self.spec!r}: {_n(self.empty, 'empty document')} skipped (first at {self.first_empty})"
            )
        return found


def _n(count: int, thing: str) -> str:
    return f"{count:,} {thing}{'s' * (count != 1)}"


def _tokenise(
    spec: str, documents: Iterable[_Document], tokenizer, max_tokens: int | None, problems: _Problems
) -> CorpusTokens:
    """Tokenise ``documents`` in order until the stream holds ``max_tokens`` tokens (all when None)."""
    eos = tokenizer.eos_token_id
    pieces: list[list[int]] = []
    kept: list[_Document] = []
    total = 0
    exhausted = True
    iterator = iter(documents)
    while max_tokens is None or total < max_tokens:
        batch = []
        for document in iterator:
            if not document.text.strip():
                problems.empty += 1
                problems.first_empty = problems.first_empty or document.where
                continue
            batch.append(document)
            if len(batch) == TOKENISE_BATCH:
                break
        if not batch:
            break
        for document, ids in zip(batch, tokenizer([d.text for d in batch], add_special_tokens=False)["input_ids"]):
            pieces.append(ids + [eos] if eos is not None else ids)
            kept.append(document)
            total += len(pieces[-1])
            if max_tokens is not None and total >= max_tokens:
                exhausted = False
                break
    if not kept:
        raise CorpusError(
            f"corpus {spec!r} holds no documents" + (": every document is empty" if problems.empty else "")
        )
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    stream = np.fromiter((t for p in pieces for t in p), dtype=np.int64, count=int(lengths.sum()))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if max_tokens is not None and len(stream) > max_tokens:
        stream = stream[:max_tokens]
    return CorpusTokens(
        spec,
        stream,
        [d.doc_id for d in kept],
        [d.domain for d in kept],
        [d.source for d in kept],
        starts,
        exhausted=exhausted,
        notices=problems.notices(),
    )


def read_manifest(path: Path) -> list[dict]:
    """The rows of a gzipped JSONL manifest (the demo bundle's ``corpus_manifest.jsonl.gz``)."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _demo(tokenizer) -> CorpusTokens:
    """The demo bundle's held-out split, already tokenised with the demo tokenizer: read whole (it
    is one array, nothing to tokenise), so its content hash is the same whatever a run uses of it."""
    demo_tokenizer = (DEMO_ROOT / "model" / "tokenizer.json").read_text()
    if tokenizer.backend_tokenizer.to_str() != _normalised_tokenizer(demo_tokenizer):
        raise CorpusError(
            "the demo corpus is stored as demo-tokenizer ids; for another model give a folder or JSONL file"
        )
    rows = [r for r in read_manifest(DEMO_ROOT / "corpus_manifest.jsonl.gz") if r["split"] == "heldout"]
    stream = np.load(DEMO_ROOT / "heldout_tokens.npy").astype(np.int64)
    lengths = np.array([r["tokens"] + 1 for r in rows])  # each document is followed by EOS
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return CorpusTokens(
        "demo", stream, [r["doc_id"] for r in rows], [r["domain"] for r in rows], [r["source"] for r in rows], starts
    )


def _normalised_tokenizer(serialised: str) -> str:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(serialised).to_str()


def _folder(root: Path, problems: _Problems) -> Iterator[_Document]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise CorpusError(f"corpus {str(root)!r} holds no documents: no {', '.join(sorted(TEXT_SUFFIXES))} files")
    for path in files:
        rel = path.relative_to(root)
        domain = rel.parts[0] if len(rel.parts) > 1 else root.name
        yield _Document(problems.decode(path.read_bytes(), str(path)), str(rel), domain, str(rel), str(path))


def _jsonl(path: Path, problems: _Problems) -> Iterator[_Document]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            line = problems.decode(raw, where)
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(
                    f"{where}: not JSON ({error.msg}); every line must be an object with a 'text' field"
                ) from None
            if not isinstance(row, dict) or "text" not in row:
                raise CorpusError(f"{where}: every line must be a JSON object with a 'text' field")
            text = row["text"]
            if not isinstance(text, str):
                raise CorpusError(f"{where}: 'text' is {_json_kind(text)}, not a string")
            doc_id = str(row.get("id", number))
            domain = str(row.get("domain", row.get("source", path.stem)))
            yield _Document(text, doc_id, domain, f"{path.name}:{doc_id}", where)


def _json_kind(value: object) -> str:
    """How JSON would name ``value``'s type, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _hf_dataset(name: str) -> Iterator[_Document]:
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
    for index, row in enumerate(dataset):
        text = row["text"]  # pyright: ignore[reportCallIssue, reportArgumentType]  (rows are dicts)
        if not isinstance(text, str):
            raise CorpusError(f"dataset {name!r} row {index}: 'text' is {_json_kind(text)}, not a string")
        yield _Document(text, str(index), name, f"{name}[{index}]", f"{name} row {index}")


def load_corpus(spec: str, tokenizer, max_tokens: int | None = None, strict: bool = False) -> CorpusTokens:
    """Read and tokenise the corpus named by ``spec`` with the model's tokenizer, stopping once the
    stream holds ``max_tokens`` tokens (the whole corpus when None)."""
    if spec == "demo":
        return _demo(tokenizer)
    problems = _Problems(spec, strict)
    path = Path(spec)
    if path.is_dir():
        problems.unit = "file"
        return _tokenise(str(path), _folder(path, problems), tokenizer, max_tokens, problems)
    if path.is_file() and path.suffix == ".jsonl":
        return _tokenise(str(path), _jsonl(path, problems), tokenizer, max_tokens, problems)
    return _tokenise(spec, _hf_dataset(check_corpus_spec(spec)), tokenizer, max_tokens, problems)


def check_corpus_spec(spec: str) -> str:
    """``spec`` if it can name a corpus (checked without reading it), else CorpusError."""
    path = Path(spec)
    if not spec.strip():
        raise CorpusError("--corpus is empty: give 'demo', a folder of text files, a .jsonl file or a dataset name")
    if path.exists() and not path.is_dir() and path.suffix != ".jsonl":
        raise CorpusError(f"corpus {spec!r} is a file but not .jsonl; give a folder of text files or a JSONL file")
    if not path.exists() and spec != "demo" and (spec.startswith((".", "/", "~")) or path.suffix == ".jsonl"):
        raise CorpusError(f"corpus {spec!r} does not exist")
    return spec
