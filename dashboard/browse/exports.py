"""User data as downloadable files: CSV for spreadsheets, JSON for scripts (lists kept as arrays,
times as ISO 8601).

CSV cells are opened by spreadsheets, which run a cell starting with ``=``, ``+``, ``-``, ``@``,
tab or carriage return as a formula (CSV injection): OWASP's rule, a ``'`` before such a cell,
keeps it text. JSON is read by scripts, not spreadsheets, and stays exact."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def _plain(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return None if value is pd.NA or (isinstance(value, float) and np.isnan(value)) else value


def as_json(frame: pd.DataFrame) -> bytes:
    """One JSON object per row."""
    rows = [{column: _plain(value) for column, value in row.items()} for row in frame.to_dict("records")]
    return json.dumps(rows, ensure_ascii=False, indent=1).encode()


def as_csv(frame: pd.DataFrame) -> bytes:
    """CSV with list columns written as JSON arrays (so tags survive a round trip) and no text cell
    a spreadsheet would run as a formula."""
    flat = frame.copy()
    for column in flat.columns:
        if any(isinstance(v, (list, tuple, np.ndarray)) for v in flat[column]):
            flat[column] = [
                json.dumps(_plain(v), ensure_ascii=False) if isinstance(v, (list, tuple, np.ndarray)) else v
                for v in flat[column]
            ]
    for column in flat.columns:
        flat[column] = [_inert(v) for v in flat[column]]
    return flat.to_csv(index=False).encode()


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _inert(value):
    """A text cell a spreadsheet would read as a formula, with OWASP's ``'`` in front."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
