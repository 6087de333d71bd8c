"""Page state <-> URL query string, so a copied link reproduces the view.

Keys: ``atlas`` (catalog key), ``sae`` (SAE names, repeated), ``latent``, ``min_density``,
``max_density``, ``min_max_act``, ``q`` (text), ``token``, ``status`` and ``tag`` (repeated),
``reviewer``, ``sort``, ``page``, ``width``; on the Triage page, ``feature`` (the feature in view,
``<SAE name>:<latent>``, apart from the queue's ``sae`` filter) and ``dead`` (``1``: the queue
includes features that never fired); on the Steer page, ``steer`` (SAE:LATENT:COEFFICIENT,
repeated), ``method``, ``prompt`` and ``run`` (the history run shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from dashboard.browse.feature_queries import SORTS, FeatureFilter
from dashboard.shell.workspace import Atlas
from dashboard.userdata import STATUSES

Params = Mapping[str, str | list[str]]


def _all(params: Params, key: str) -> list[str]:
    value = params.get(key)
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _number(params: Params, key: str) -> float | None:
    try:
        return float(_all(params, key)[0])
    except (IndexError, ValueError):
        return None


@overload
def integer(params: Params, key: str, default: int) -> int: ...
@overload
def integer(params: Params, key: str, default: None = None) -> int | None: ...
def integer(params: Params, key: str, default: int | None = None) -> int | None:
    try:
        return int(_all(params, key)[0])
    except (IndexError, ValueError):
        return default


def text(params: Params, key: str, default: str = "") -> str:
    values = _all(params, key)
    return values[0] if values else default


def read_feature(params: Params, atlas: Atlas) -> tuple[int, int] | None:
    """The ``feature`` a Triage link names, as (sae, latent); None when it is absent, names no SAE of
    this atlas or no whole number (the latent itself is checked by the page, which says what is wrong)."""
    name, _, number = text(params, "feature").rpartition(":")
    sae = atlas.sae_index(name) if name else None
    try:
        return None if sae is None else (sae, int(number))
    except ValueError:
        return None


def feature_ref(atlas: Atlas, sae: int, latent: int) -> str:
    """The ``feature`` value for (sae, latent): read back by :func:`read_feature`."""
    return f"{atlas.sae_row(sae)['name']}:{latent}"


def read_filter(params: Params, atlas: Atlas) -> FeatureFilter:
    """The filter a URL describes; unknown SAE names and statuses are dropped, not errors."""
    saes = tuple(i for i in (atlas.sae_index(name) for name in _all(params, "sae")) if i is not None)
    return FeatureFilter(
        saes=saes,
        min_density=_number(params, "min_density"),
        max_density=_number(params, "max_density"),
        min_max_act=_number(params, "min_max_act"),
        text=text(params, "q"),
        top_token=text(params, "token"),
        statuses=tuple(s for s in _all(params, "status") if s in STATUSES),
        tags=tuple(_all(params, "tag")),
        reviewer=text(params, "reviewer"),
    )


def filter_params(flt: FeatureFilter, atlas: Atlas) -> dict[str, str | list[str]]:
    """The query-string entries for ``flt`` (empty fields left out, so links stay short)."""
    entries: dict[str, str | list[str]] = {
        "sae": [str(atlas.sae_row(i)["name"]) for i in flt.saes],
        "min_density": _format(flt.min_density),
        "max_density": _format(flt.max_density),
        "min_max_act": _format(flt.min_max_act),
        "q": flt.text,
        "token": flt.top_token,
        "status": list(flt.statuses),
        "tag": list(flt.tags),
        "reviewer": flt.reviewer,
    }
    return {key: value for key, value in entries.items() if value}


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def read_sort(params: Params) -> str:
    sort = text(params, "sort", "feature")
    return sort if sort in SORTS else "feature"
