"""The demo PII detector's labelled data, generated reproducibly: a seed gives the same rows.

Every row is a passage of the demo corpus's held-out split (text the model and SAEs never trained
on). A positive has one sentence inserted that carries a Faker-made name, email, phone number,
postal address, card number or IBAN in one of several locales, with its character span; half the
negatives have a sentence from the same templates carrying a look-alike instead (verse numbers,
dates, kernel addresses, versions, section numbers), and the others are bare passages, chosen with
digits in them where the document has some. So a detector cannot pass by spotting the templates or
"a sentence that was inserted": it has to tell personal data from numbers that only look like it.
Torch-free (the corpus is decoded with the demo tokenizer through ``tokenizers``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from faker import Faker

from analysis.atlas.corpus_source import read_manifest
from analysis.paths import DEMO_DIR

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "it_IT", "es_ES")
PII_KINDS = ("name", "email", "phone", "address", "card", "iban")
MIN_CHARS, MAX_CHARS = 120, 420

NEUTRAL = (
    "See {x} for the details.",
    "The reference given was {x}.",
    "Write down {x} and keep it safe.",
    "It was noted in the margin as {x}.",
    "Check {x} again before the end of the day.",
)
TEMPLATES = {
    "name": ("This part was written by {x}.", "Ask {x} before you change it.", "Signed, {x}."),
    "email": ("Send comments to {x}.", "Questions go to {x} by Friday."),
    "phone": ("Call {x} if the build fails.", "You can reach the office on {x}."),
    "address": ("Post the forms to {x}.", "The parcel goes to {x}."),
    "card": ("The card on file is {x}.", "Charge it to {x}, please."),
    "iban": ("Pay the invoice into {x}.", "Transfer the deposit to account {x}."),
}
BOOKS = ("Genesis", "Exodus", "Psalms", "Isaiah", "Matthew", "John", "Romans", "Revelation")


@dataclass(frozen=True)
class Passage:
    doc_id: str
    text: str


def _decoys(rng: random.Random, fake: Faker) -> dict[str, Callable[[], str]]:
    """Values shaped like PII that are not: what the corpus itself is full of."""
    return {
        "verse": lambda: f"{rng.choice(BOOKS)} {rng.randint(1, 50)}:{rng.randint(1, 40)}",
        "date": lambda: fake.date_between("-150y").strftime(rng.choice(("%Y-%m-%d", "%d %B %Y", "%m/%d/%Y"))),
        "kernel-address": lambda: "0xffff" + "".join(rng.choice("0123456789abcdef") for _ in range(12)),
        "version": lambda: f"{rng.randint(1, 6)}.{rng.randint(0, 19)}.{rng.randint(0, 40)}",
        "section": lambda: f"section {rng.randint(1, 12)}.{rng.randint(1, 9)}.{rng.randint(1, 9)}",
        "count": lambda: f"{rng.randint(1, 99) * 1024:,} bytes",
        "time": lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
    }


def _pii(fake: Faker, kind: str) -> str:
    value = {
        "name": fake.name,
        "email": fake.email,
        "phone": fake.phone_number,
        "address": fake.address,
        "card": fake.credit_card_number,
        "iban": fake.iban,
    }[kind]()
    return " ".join(value.split())  # addresses come on several lines


class _Corpus:
    """The held-out documents, decoded only when a row first needs them."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(DEMO_DIR / "model" / "tokenizer.json"))
        rows = [r for r in read_manifest(DEMO_DIR / "corpus_manifest.jsonl.gz") if r["split"] == "heldout"]
        self._stream = np.load(DEMO_DIR / "heldout_tokens.npy", mmap_mode="r")
        lengths = np.array([r["tokens"] + 1 for r in rows])  # each document is followed by EOS
        self._starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self._rows = rows
        self._texts: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def passage(self, index: int, rng: random.Random, want_digits: bool) -> Passage:
        """A run of whole lines of document ``index``, MIN_CHARS to MAX_CHARS long; one with a digit
        when ``want_digits`` and the document has one."""
        if index not in self._texts:
            start, count = int(self._starts[index]), self._rows[index]["tokens"]
            self._texts[index] = self._tokenizer.decode(self._stream[start : start + count].tolist())
        lines = [line for line in self._texts[index].split("\n") if line.strip()]
        starts = list(range(len(lines)))
        rng.shuffle(starts)
        fallback = None
        for first in starts:
            text = ""
            for line in lines[first:]:
                text = f"{text}\n{line}" if text else line
                if len(text) >= MIN_CHARS:
                    break
            text = _cut(text)
            if len(text) < MIN_CHARS // 2:
                continue
            if not want_digits or re.search(r"\d", text):
                return Passage(self._rows[index]["doc_id"], text)
            fallback = fallback or text
        return Passage(self._rows[index]["doc_id"], fallback or _cut(self._texts[index]))


def _cut(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    head = text[:MAX_CHARS]
    return head[: head.rfind(" ")] if " " in head else head


def _insert(passage: str, sentence: str, value_at: int, value: str, rng: random.Random) -> tuple[str, list[int]]:
    """``sentence`` put between two sentences (or lines) of ``passage``; the value's span in the result."""
    breaks = [0, len(passage)] + [m.end() for m in re.finditer(r"(?<=[.;:!?\n]) ", passage)]
    at = rng.choice(breaks)
    before, after = passage[:at].rstrip(" "), passage[at:].lstrip(" ")
    head = f"{before} " if before else ""
    text = head + sentence + (f" {after}" if after else "")
    start = len(head) + value_at
    return text, [start, start + len(value)]


def generate(n: int, seed: int) -> list[dict]:
    """``n`` labelled rows (half PII, rounded down), the same for the same ``n`` and ``seed``:
    ``text``, ``label`` (1: has PII), ``spans`` (the PII's character spans), ``kind`` (the PII kind,
    ``decoy:<shape>`` or ``passage``), ``locale`` and ``doc`` (the held-out document used)."""
    rng = random.Random(seed)
    fakes = {}
    for offset, locale in enumerate(LOCALES):
        fakes[locale] = Faker(locale)
        fakes[locale].seed_instance(seed * 1000 + offset)
    corpus = _Corpus()
    order = list(range(len(corpus)))
    rng.shuffle(order)
    rows = []
    for index in range(n):
        locale = rng.choice(LOCALES)
        fake = fakes[locale]
        positive = index % 2 == 1
        decoy = not positive and rng.random() < 0.5
        passage = corpus.passage(order[index % len(order)], rng, want_digits=not positive and not decoy)
        if positive or decoy:
            if positive:
                kind = rng.choice(PII_KINDS)
                value = _pii(fake, kind)
                template = rng.choice(TEMPLATES[kind] + NEUTRAL)
            else:
                shape, make = rng.choice(sorted(_decoys(rng, fake).items()))
                kind, value, template = f"decoy:{shape}", make(), rng.choice(NEUTRAL)
            sentence = template.replace("{x}", value)
            text, span = _insert(passage.text, sentence, template.index("{x}"), value, rng)
            spans = [span] if positive else []
        else:
            kind, text, spans = "passage", passage.text, []
        rows.append(
            {
                "text": text,
                "label": int(positive),
                "spans": spans,
                "kind": kind,
                "locale": locale,
                "doc": passage.doc_id,
            }
        )
    return rows
