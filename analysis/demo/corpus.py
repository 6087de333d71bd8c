"""The demo corpus: openly licensed English text from Debian packages, in clearly different domains.

Every document is rebuilt deterministically from files that Debian's packages install, so the
raw text need not be committed: ``data/demo/corpus_manifest.jsonl.gz`` records each document's
id, domain, source, split and content hash, and ``verify_manifest`` checks a rebuild against it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.atlas.corpus_source import read_manifest  # one reader of the manifest, shared with the atlas
from analysis.errors import SAEscopeError

HELDOUT_PERCENT = 18
CHUNK_CHARS = 6000


class DemoBuildError(SAEscopeError, RuntimeError):
    """The demo bundle cannot be built here: missing packages, a differing corpus, a build already running."""


@dataclass(frozen=True)
class Document:
    """One unit of text with where it came from; ``split`` is 'train' or 'heldout'."""

    doc_id: str
    domain: str
    source: str
    text: str

    @property
    def split(self) -> str:
        bucket = int(hashlib.sha256(self.doc_id.encode()).hexdigest()[:8], 16) % 100
        return "heldout" if bucket < HELDOUT_PERCENT else "train"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


@dataclass(frozen=True)
class Source:
    """A Debian package that supplies one domain of the corpus."""

    domain: str
    package: str
    licence: str
    description: str
    max_chars: int
    reader: Callable[[], Iterator[tuple[str, str]]]  # yields (source label, text)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(text: str) -> str:
    """NFC-normalise, drop control characters (keeping newlines and tabs) and trailing spaces."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def chunk(text: str, max_chars: int = CHUNK_CHARS) -> list[str]:
    """Split long text at paragraph breaks into pieces of at most about ``max_chars``."""
    pieces, current = [], ""
    for para in text.split("\n\n"):
        if current and len(current) + len(para) + 2 > max_chars:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def _read_bible() -> Iterator[tuple[str, str]]:
    out = subprocess.run(
        ["bible", "-f", "Genesis1:1-Revelation22:21"], capture_output=True, text=True, check=True
    ).stdout
    chapters: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = re.match(r"^(\w+?)(\d+):(\d+) (.*)$", line)
        if match:
            book, chapter, _, verse = match.groups()
            chapters.setdefault(f"{book} {chapter}", []).append(verse)
    for name, verses in chapters.items():
        yield f"bible {name}", " ".join(verses)


def _read_tree(root: str, pattern: str) -> Iterator[tuple[str, str]]:
    base = Path(root)
    for path in sorted(base.rglob(pattern)):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        yield str(path.relative_to(base)), raw.decode("utf-8", errors="replace")


def _read_python_docs() -> Iterator[tuple[str, str]]:
    yield from _read_tree("/usr/share/doc/python3.11/html/_sources", "*.rst.txt")


def _read_linux_docs() -> Iterator[tuple[str, str]]:
    yield from _read_tree("/usr/share/doc/linux-doc-6.1/Documentation", "*.rst.gz")


def _read_fortunes() -> Iterator[tuple[str, str]]:
    base = Path("/usr/share/games/fortunes")
    for path in sorted(base.glob("*.u8")):
        cookies = [c.strip() for c in path.read_text("utf-8", errors="replace").split("\n%\n")]
        # Group cookies so that a document is a page of a fortune file, not a single line.
        for start in range(0, len(cookies), 20):
            yield f"{path.stem}#{start // 20}", "\n\n".join(c for c in cookies[start : start + 20] if c)


def _read_gcide() -> Iterator[tuple[str, str]]:
    raw = gzip.decompress(Path("/usr/share/dictd/gcide.dict.dz").read_bytes()).decode("utf-8", "replace")
    body = raw[raw.find("\nA \\") :]  # skip the database header entries
    entries = re.split(r"\n\n(?=\S)", body)
    for start in range(0, len(entries), 25):
        first = entries[start].split("\\", 1)[0].strip()
        yield f"gcide {first}", "\n\n".join(entries[start : start + 25])


SOURCES: tuple[Source, ...] = (
    Source(
        "bible",
        "bible-kjv-text",
        "Public domain (King James Version text); Debian packaging GPL-2+",
        "The King James Bible, one document per chapter, printed by the `bible` program",
        8_000_000,
        _read_bible,
    ),
    Source(
        "python-docs",
        "python3.11-doc",
        "PSF License Version 2",
        "reStructuredText sources of the Python 3.11 documentation (`_sources/*.rst.txt`)",
        8_000_000,
        _read_python_docs,
    ),
    Source(
        "linux-docs",
        "linux-doc-6.1",
        "GPL-2.0",
        "reStructuredText sources of the Linux 6.1 kernel documentation (`Documentation/**/*.rst.gz`)",
        8_000_000,
        _read_linux_docs,
    ),
    Source(
        "fortunes",
        "fortunes",
        "BSD-style (fortune-mod); see /usr/share/doc/fortunes/copyright",
        "Fortune cookies: quotations, jokes and epigrams, 20 per document",
        8_000_000,
        _read_fortunes,
    ),
    Source(
        "dictionary",
        "dict-gcide",
        "GPL-2+ (GNU Collaborative International Dictionary of English)",
        "Dictionary entries from GCIDE (Webster's 1913 + WordNet), 25 entries per document",
        8_000_000,
        _read_gcide,
    ),
)


def missing_packages() -> list[str]:
    """Debian packages the corpus needs that are not installed here."""
    probes = {
        "bible-kjv-text": Path("/usr/lib/bible.data"),
        "python3.11-doc": Path("/usr/share/doc/python3.11/html/_sources"),
        "linux-doc-6.1": Path("/usr/share/doc/linux-doc-6.1/Documentation"),
        "fortunes": Path("/usr/share/games/fortunes/fortunes.u8"),
        "dict-gcide": Path("/usr/share/dictd/gcide.dict.dz"),
    }
    missing = [pkg for pkg, path in probes.items() if not path.exists()]
    try:
        subprocess.run(["bible", "-f", "Ge1:1"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        missing.append("bible-kjv")
    return missing


def build_documents() -> list[Document]:
    """All corpus documents, in a fixed order, each domain capped at its ``max_chars``."""
    lacking = missing_packages()
    if lacking:
        raise DemoBuildError(
            f"the demo corpus needs Debian packages that are not installed: apt-get install {' '.join(lacking)}"
        )
    documents: list[Document] = []
    for source in SOURCES:
        pieces = [
            Document(f"{source.domain}/{label}/{index}", source.domain, label, piece)
            for label, raw in source.reader()
            for index, piece in enumerate(chunk(clean(raw)))
            if len(piece) >= 200
        ]
        # Over the cap, keep every k-th piece so the whole source is represented, not its first files.
        total = sum(len(doc.text) for doc in pieces)
        stride = -(-total // source.max_chars)
        documents.extend(pieces[::stride])
    return documents


def write_manifest(documents: list[Document], path: Path, token_counts: list[int]) -> None:
    """Record every document (no text) so a rebuild can be checked against the committed bundle."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for doc, n_tokens in zip(documents, token_counts):
            row = {k: v for k, v in asdict(doc).items() if k != "text"}
            row.update(split=doc.split, sha256=doc.sha256, tokens=n_tokens)
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def verify_manifest(documents: list[Document], path: Path) -> None:
    """Raise if the rebuilt documents differ from those the committed bundle was made from."""
    recorded = read_manifest(path)
    rebuilt = [(d.doc_id, d.sha256) for d in documents]
    expected = [(row["doc_id"], row["sha256"]) for row in recorded]
    if rebuilt != expected:
        differing = sum(a != b for a, b in zip(rebuilt, expected)) + abs(len(rebuilt) - len(expected))
        raise DemoBuildError(
            f"the corpus rebuilt here differs from {path} in {differing} documents (different Debian package versions?)"
        )
