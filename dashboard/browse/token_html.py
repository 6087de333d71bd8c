"""Token strings as highlighted HTML: data, never markup, and read as the text it was.

Each token is one span with ``white-space: pre-wrap``: its spaces are real spaces (a line wraps at
them, never inside a word, and a token that ends a word is not split); a newline is shown as ↵ and
breaks the line; control and invisible characters become visible symbols (``visible``: a bidi
override or a zero-width space cannot hide or reorder text). Then ``html.escape``, so ``<script>``
is text. Colour encodes the activation, the hover title gives its value, and the example's max token
is outlined. An ellipsis marks a cut window, on the same line as the tokens.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from dashboard.shell.plain_text import visible

HIGHLIGHT_RGB = "255, 127, 14"  # plotly's orange, the colour of activation everywhere in SAEscope
# a line wraps at spaces; only a word longer than the line is broken (overflow-wrap: break-word)
LINE_STYLE = (
    "font-family: ui-monospace, monospace; font-size: 0.85rem; line-height: 1.7; "
    "white-space: normal; word-break: normal; overflow-wrap: break-word;"
)


def _token_span(text: str, value: float, scale: float, is_max: bool, measure: str = "activation") -> str:
    alpha = 0.0 if scale <= 0 else min(max(value / scale, 0.0), 1.0)
    style = f"background: rgba({HIGHLIGHT_RGB}, {alpha:.3f}); border-radius: 2px; white-space: pre-wrap;"
    if is_max:
        style += " outline: 2px solid #c2410c; font-weight: 600;"
    shown = "↵\n".join(visible(line, spaces=False) for line in text.split("\n"))
    title = html.escape(f"{visible(text)}  {measure} {value:.4g}", quote=True)
    return f'<span style="{style}" title="{title}">{html.escape(shown, quote=True)}</span>'


def window_slice(length: int, centre: int, width: int | None) -> range:
    """Positions shown for a context width (``None`` = the whole window): ``width`` tokens before
    the centre and a few after, clipped to the window."""
    if width is None:
        return range(length)
    return range(max(0, centre - width), min(length, centre + max(width // 4, 3) + 1))


def highlighted_tokens(
    texts: Sequence[str],
    values: Sequence[float] | np.ndarray,
    max_position: int,
    scale: float,
    shown: range | None = None,
    measure: str = "activation",
) -> str:
    """One example as a line of coloured token spans (positions in ``shown`` only); ``measure``
    names the value in each token's hover title."""
    positions = shown if shown is not None else range(len(texts))
    spans = "".join(_token_span(texts[p], float(values[p]), scale, p == max_position, measure) for p in positions)
    prefix = "…" if positions.start > 0 else ""  # no space after it: it stays on the first token's line
    suffix = "\u00a0…" if positions.stop < len(texts) else ""
    return f'<div style="{LINE_STYLE}">{prefix}{spans}{suffix}</div>'
