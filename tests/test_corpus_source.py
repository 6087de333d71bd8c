"""Reading a corpus lazily, and refusing what is not text, through the atlas's own corpus reader
with the demo model's real tokenizer."""

from __future__ import annotations

import json

import pytest

from analysis.atlas.corpus_source import CorpusError, load_corpus
from analysis.model_loading import load_tokenizer
from analysis.paths import DEMO_MODEL


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(str(DEMO_MODEL))


def test_a_short_run_reads_only_the_start_of_a_large_corpus(tokenizer, tmp_path):
    """A 4,095-token stream is read from the first documents; a bad line far below is never reached."""
    path = tmp_path / "large.jsonl"
    documents = 20_000
    with path.open("w") as handle:
        for i in range(documents):
            handle.write(json.dumps({"text": f"Document {i} says something about the sea and the ships. " * 4}) + "\n")
        handle.write('{"text": null}\n')
    corpus = load_corpus(str(path), tokenizer, max_tokens=4095)
    assert len(corpus.stream) == 4095 and not corpus.exhausted
    assert len(corpus.doc_ids) < 200  # of 20,000
    with pytest.raises(CorpusError, match=f"large.jsonl:{documents + 1}: 'text' is null, not a string"):
        load_corpus(str(path), tokenizer)


def test_the_same_prefix_gives_the_same_content_hash(tokenizer, tmp_path):
    """Every shard, merge and verify of a run reads the same prefix, so they agree on its hash."""
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"Line {i} of many words here. " * 10}) for i in range(200)))
    first, again = (load_corpus(str(path), tokenizer, max_tokens=1000) for _ in range(2))
    longer = load_corpus(str(path), tokenizer, max_tokens=2000)
    assert first.content_hash == again.content_hash != longer.content_hash
    assert (longer.stream[:1000] == first.stream).all()
