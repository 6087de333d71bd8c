"""The demo corpus: cleaning, chunking and the held-out split are deterministic, and a rebuild matches."""

from __future__ import annotations

import pytest

from analysis.demo import corpus


def test_clean_drops_control_characters_but_keeps_lines():
    assert corpus.clean("a\x00b\x1b[0m\r\nc  \n\n\n\nd") == "ab[0m\nc\n\nd"


def test_chunk_splits_at_paragraphs_under_the_limit():
    text = "\n\n".join(["x" * 40] * 10)
    pieces = corpus.chunk(text, max_chars=100)
    assert all(len(p) <= 100 for p in pieces)
    assert "\n\n".join(pieces) == text


def test_split_depends_only_on_the_document_id():
    doc = corpus.Document("bible/Ge 1/0", "bible", "Ge 1", "text")
    assert doc.split == corpus.Document("bible/Ge 1/0", "bible", "Ge 1", "other text").split
    splits = {corpus.Document(f"d/{i}", "d", "s", "t").split for i in range(200)}
    assert splits == {"train", "heldout"}


@pytest.mark.skipif(bool(corpus.missing_packages()), reason="the corpus's Debian packages are not installed here")
@pytest.mark.slow
def test_rebuilt_corpus_matches_the_committed_manifest(demo_dir):
    corpus.verify_manifest(corpus.build_documents(), demo_dir / "corpus_manifest.jsonl.gz")
