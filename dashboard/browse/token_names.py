"""Tokens and automatic labels as a reader can read them.

A byte-level BPE token (GPT-2's, Llama 3's, Qwen's) may hold part of a UTF-8 character; decoded
alone it is ``�``, and many such tokens look alike. Where the model's ``tokenizer.json`` is on disk
(as for the demo bundle), such a token is shown with its undecodable bytes as ``⟨0xE6⟩`` and the rest
decoded (``⟨0x89⟩有``). Control and invisible characters are shown by ``plain_text.visible`` as
``⟨U+000E⟩`` wherever text is shown: a ``⟨0x..⟩`` is a byte, a ``⟨U+....⟩`` a character.

Automatic labels are stored with Python's escapes (``'\\x0e'``) and ``�``. A label that is exactly
what ``analysis.atlas.labels.automatic_labels`` makes from the feature's own tokens is shown again
from those tokens in the readable forms above; any other label (written by another tool, or edited)
is shown as stored. Why our own: the tokenizers library decodes a token to ``�`` as well, and its
byte table is GPT-2's ``bytes_to_unicode``, rebuilt here in a few lines.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from analysis.atlas.labels import FIRES_ON, FIRING_TOKENS, PROMOTED_TOKENS, PROMOTES, SEPARATOR, automatic_labels
from analysis.paths import REPO_ROOT
from dashboard.shell.plain_text import visible
from dashboard.shell.workspace import Atlas

REPLACEMENT = "\ufffd"
_NAMES: dict[tuple[Path, float], tuple[str, ...]] = {}


def _byte_marks(error: UnicodeError) -> tuple[str, int]:
    assert isinstance(error, UnicodeDecodeError), "registered for decoding only"
    return "".join(f"⟨0x{b:02X}⟩" for b in error.object[error.start : error.end]), error.end


codecs.register_error("saescope-byte-marks", _byte_marks)


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte <-> printable character table, inverted: the vocabulary's characters to bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = dict.fromkeys(printable), 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = 256 + extra
            extra += 1
    return {chr(char if char is not None else byte): byte for byte, char in chars.items()}


def _vocabulary(atlas: Atlas) -> dict[int, str]:
    """id -> the byte-level BPE vocabulary string, from the model's tokenizer.json when it is on disk."""
    spec = Path(str(atlas.meta.get("model", {}).get("spec", "")))
    folder = spec if spec.is_absolute() else REPO_ROOT / spec
    try:
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        return {int(i): token for token, i in model["vocab"].items()} if model.get("type") == "BPE" else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _byte_name(text: str, piece: str | None, byte_of: dict[str, int]) -> str:
    if piece is None or not all(char in byte_of for char in piece):
        return text
    return bytes(byte_of[char] for char in piece).decode("utf-8", errors="saescope-byte-marks")


def token_names(atlas: Atlas) -> tuple[str, ...]:
    """The atlas's token texts with undecodable bytes as ``⟨0xNN⟩`` where the tokenizer says which
    (read once per atlas file)."""
    key = (atlas.path, atlas.modified)
    if key not in _NAMES:
        texts = atlas.token_text
        broken = [i for i, text in enumerate(texts) if REPLACEMENT in text]
        vocabulary = _vocabulary(atlas) if broken else {}
        names = list(texts)
        if vocabulary:
            byte_of = _byte_of_char()
            for i in broken:
                names[i] = _byte_name(texts[i], vocabulary.get(i), byte_of)
        _NAMES[key] = tuple(names)
    return _NAMES[key]


def shown_token(name: str) -> str:
    """One token inside a label: control characters visible; a token of spaces only shows them as ·."""
    return visible(name, spaces=not name.strip())


def readable_label(
    label: str | None,
    firing: Sequence[int] | None,
    promoted: Sequence[int] | None,
    atlas: Atlas,
) -> str:
    """The automatic label as shown: rebuilt from its tokens when it is theirs, else as stored
    (``visible``); '' for none."""
    label = label or ""
    if not label or firing is None or not len(firing):
        return visible(label, spaces=False)
    promoted_rows = None if promoted is None else np.asarray([promoted])
    if automatic_labels([list(firing)], promoted_rows, list(atlas.token_text)) != [label]:
        return visible(label, spaces=False)
    names = token_names(atlas)
    parts = [FIRES_ON + ", ".join(f"'{shown_token(names[t])}'" for t in list(firing)[:FIRING_TOKENS])]
    if promoted is not None:
        parts.append(PROMOTES + ", ".join(f"'{shown_token(names[t])}'" for t in list(promoted)[:PROMOTED_TOKENS]))
    return SEPARATOR.join(parts)
