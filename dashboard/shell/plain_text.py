"""Text that came from a user, an atlas or a URL, shown as text: never markdown, never HTML, never
hidden or reordered by invisible characters.

Which helper goes with which Streamlit widget (Streamlit 1.67 reads markdown in more places than
it looks: st.markdown, st.caption, st.error / warning / info / success, st.toast, headings, metric
labels *and values*, widget and page_link labels, radio options, and every cell of ``st.table``):

- ``md(text)`` for any of those markdown readers: characters made visible (see ``visible``), line
  breaks shown as ↵, and every character that could start markup backslash-escaped (CommonMark
  lets any ASCII punctuation be escaped), so ``**x**``, ``![b](url)``, ``# h``, ``| t |``, ``&#x202E;``,
  ``$x$`` and ``<b>`` read literally and nothing is fetched. Our own words around it may keep
  their markdown; only the untrusted part goes through ``md``.
- ``plain_frame(frame)`` for ``st.dataframe``: its grid draws cells as text already, so only the
  invisible characters are made visible (in strings and in lists of strings). Untrusted tables use
  ``st.dataframe``, never ``st.table``.
- ``option`` as the ``format_func`` of a selectbox or multiselect (their options are plain text)
  and ``visible(text)`` inside ``st.html`` after ``html.escape``.

Why our own: Streamlit has no "render as text" switch for these widgets, and ``st.text`` /
``st.code`` would turn every message into a monospace block.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd

SHOWN_AS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
# Cf holds the bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) and the zero-width
# characters (U+200B-U+200D, U+2060, U+FEFF); Cc the control characters.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
MARKDOWN_SPECIALS = set("\\`*_{}()<>#!|~$:&@^")
# "[" and "]" stay: a link or an image needs "](" and "(" is escaped, and a reference definition
# ("[x]: url") needs ":" and a line of its own, so "[0, 1]" stays readable in the raw message.
# "-", "+" and "." mean something only where a line starts (a list, a rule, an ordered list) or in
# a "www." link; ``md`` keeps text on one line, so it escapes them only there and keeps names such
# as "resid-L2" or "atlas.duckdb" readable in the raw message.
LINE_START = re.compile(r"\s*\d*")


def visible(text: str, spaces: bool = True) -> str:
    """``text`` with whitespace shown as symbols (plain spaces too when ``spaces``; tokens want
    them, prose labels do not) and every control/invisible character as ``⟨U+XXXX⟩``."""
    shown = []
    for char in text:
        if char == " " and not spaces:
            shown.append(char)
        elif char in SHOWN_AS:
            shown.append(SHOWN_AS[char])
        elif unicodedata.category(char) in INVISIBLE_CATEGORIES or (char.isspace() and char != " "):
            shown.append(f"⟨U+{ord(char):04X}⟩")
        else:
            shown.append(char)
    return "".join(shown)


def option(value: object) -> str:
    """A selectbox / multiselect option shown as text: invisible characters made visible, spaces kept."""
    return visible(str(value), spaces=False)


def md(text: object, limit: int | None = None) -> str:
    """``text`` for a widget that reads markdown, shown literally: visible, shortened to ``limit``
    characters when given, every markdown character backslash-escaped."""
    shown = visible(str(text), spaces=False)
    if limit is not None and len(shown) > limit:
        shown = shown[: limit - 1] + "…"
    return "".join("\\" + c if _special(shown, i) else c for i, c in enumerate(shown))


def _special(text: str, i: int) -> bool:
    char = text[i]
    if char in MARKDOWN_SPECIALS:
        return True
    return char in "-+." and (LINE_START.fullmatch(text[:i]) is not None or text[:i].lower().endswith("www"))


def _cell(value: object) -> object:
    if isinstance(value, str):
        return visible(value, spaces=False)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_cell(v) for v in value]
    return value


def plain_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` for ``st.dataframe`` with every string (and string in a list) visible."""
    shown = frame.copy()
    for column in shown.columns:
        if not (pd.api.types.is_numeric_dtype(shown[column]) or pd.api.types.is_datetime64_any_dtype(shown[column])):
            shown[column] = [_cell(v) for v in shown[column]]
    return shown
