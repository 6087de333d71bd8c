"""The watchlist file: features of concern and what is expected of them, as versioned TOML.

Read with the standard library's ``tomllib`` and checked completely here, torch-free, so that
``saescope watch run`` refuses a bad file (one line naming the table and key, exit code 2) before
any model loads. The format is documented in docs/GOVERNANCE.md ("Watchlists"); ``format = 1`` is
the only version so far, and a newer number is refused rather than half-read.

A feature names an SAE (by the name it is loaded under, the folder's name), a latent, and the sha256
of that latent's decoder row, so that a retrained or reordered SAE's matching latent is found by
decoder cosine (analysis/governance/watch_checks.py); the row itself may be stored beside the hash
(``decoder_row``, base64 of float32 little-endian) or in a ``.npy`` file (``decoder_file``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.errors import SAEscopeError
from analysis.governance.detector_files import DetectorError, read_detector

FORMAT = 1
EXPECTATIONS = ("fires_at_least", "fires_at_most", "mean_rise_at_most", "steering_raises")
DEFAULT_MIN_COSINE = 0.9
MAX_TEXTS = 10_000
MAX_TEXT_CHARS = 20_000


class WatchlistError(SAEscopeError, ValueError):
    """A watchlist file that cannot be read or does not follow the format; the message names where."""


def row_sha256(row: np.ndarray) -> str:
    """The hash a watchlist stores for a decoder row: sha256 of its float32 little-endian bytes."""
    return hashlib.sha256(np.ascontiguousarray(row, dtype="<f4").tobytes()).hexdigest()


def encode_row(row: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")


@dataclass(frozen=True)
class WatchedFeature:
    """An SAE latent to watch, or a detector folder (``detector``; then ``sae`` is the SAE its
    detector.json names and ``latent`` is unset)."""

    id: str
    sae: str = ""
    latent: int = -1
    decoder_sha256: str = ""
    decoder_row: np.ndarray | None = field(default=None, compare=False)
    min_cosine: float = DEFAULT_MIN_COSINE
    label: str = ""
    detector: Path | None = None


@dataclass(frozen=True)
class Check:
    """One expectation about one feature on a set of texts (or, for steering, prompts)."""

    id: str
    feature: str
    expect: str
    texts: tuple[str, ...]
    threshold: float | None = None  # fires_at_least / fires_at_most
    max_rise: float | None = None  # mean_rise_at_most, in activation units
    max_rise_fraction: float | None = None  # mean_rise_at_most, as a fraction of the baseline mean
    baseline_mean: float | None = None  # mean_rise_at_most without --baseline: the recorded baseline
    coefficient: float | None = None  # steering_raises
    tokens: tuple[str, ...] = ()  # steering_raises
    min_logprob_rise: float = 0.0  # steering_raises: each token's log-probability must rise by more
    method: str = "additive"

    @property
    def needs_baseline_model(self) -> bool:
        return self.expect == "mean_rise_at_most" and self.baseline_mean is None


@dataclass(frozen=True)
class Watchlist:
    path: Path
    sha256: str
    name: str
    description: str
    features: dict[str, WatchedFeature]
    checks: tuple[Check, ...]

    @property
    def sae_names(self) -> list[str]:
        return sorted({f.sae for f in self.features.values()})


class _Table:
    """One TOML table being read: typed getters that raise WatchlistError naming the file, table and key."""

    def __init__(self, data: dict, where: str, allowed: set[str]) -> None:
        self.data, self.where = data, where
        unknown = sorted(set(data) - allowed)
        if unknown:
            self.fail(f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")

    def fail(self, message: str):
        raise WatchlistError(f"{self.where}: {message}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            self.fail(f"{key!r} is missing")
        if not isinstance(value, str) or (default is None and not value.strip()):
            self.fail(f"{key!r} must be a non-empty string, not {value!r}")
        return value

    def number(self, key: str, low: float = -math.inf, required: bool = False) -> float | None:
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(f"{key!r} is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < low:
            self.fail(
                f"{key!r} must be a finite number{f' of at least {low:g}' if low > -math.inf else ''}, not {value!r}"
            )
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{key!r} must be a list of non-empty strings")
        return tuple(value)


def _read_texts(table: _Table, base: Path) -> tuple[str, ...]:
    """``texts`` inline and/or ``texts_file`` (one text per line, or a .jsonl file with a ``text`` field)."""
    texts = list(table.strings("texts"))
    if "texts_file" in table.data:
        path = base / table.text("texts_file")
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            table.fail(f"texts_file {path} cannot be read ({getattr(error, 'strerror', None) or error})")
        if path.suffix == ".jsonl":
            for number, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    try:
                        text = json.loads(line).get("text")
                    except (json.JSONDecodeError, AttributeError):
                        text = None
                    if not isinstance(text, str) or not text.strip():
                        table.fail(f"{path} line {number} is not a JSON object with a non-empty 'text'")
                    texts.append(text)
        else:
            texts += [line for line in raw.splitlines() if line.strip()]
    if not texts:
        table.fail("give the texts to check on: 'texts' and/or 'texts_file'")
    if len(texts) > MAX_TEXTS or any(len(t) > MAX_TEXT_CHARS for t in texts):
        table.fail(f"at most {MAX_TEXTS:,} texts of at most {MAX_TEXT_CHARS:,} characters each")
    return tuple(texts)


def _decoder_row(table: _Table, base: Path, expected_hash: str) -> np.ndarray | None:
    row = None
    if "decoder_row" in table.data:
        try:
            row = np.frombuffer(base64.b64decode(table.text("decoder_row"), validate=True), dtype="<f4")
        except (binascii.Error, ValueError):
            table.fail("'decoder_row' must be base64 of float32 little-endian values")
    elif "decoder_file" in table.data:
        path = base / table.text("decoder_file")
        try:
            row = np.load(path, allow_pickle=False).astype("<f4").reshape(-1)
        except (OSError, ValueError) as error:
            table.fail(f"decoder_file {path} is not a readable .npy array ({error})")
    if row is not None and (row.size == 0 or row_sha256(row) != expected_hash):
        table.fail("the stored decoder row does not have the decoder_sha256 given: one of them was edited")
    return row


def _feature(data: object, index: int, base: Path) -> WatchedFeature:
    if not isinstance(data, dict):
        raise WatchlistError(f"features[{index}] must be a table ([[features]])")
    where = f"features[{index}]" + (f" (id {data['id']!r})" if isinstance(data.get("id"), str) else "")
    keys = {"id", "sae", "latent", "decoder_sha256", "decoder_row", "decoder_file", "min_cosine", "label", "detector"}
    table = _Table(data, where, keys)
    feature_id = table.text("id")
    label = table.text("label", "")
    if "detector" in data:
        if set(data) & {"sae", "latent", "decoder_sha256", "decoder_row", "decoder_file"}:
            table.fail("a detector feature names its folder only; its SAE and latents are in its detector.json")
        folder = base / table.text("detector")
        if not (folder / "detector.json").is_file():
            table.fail(f"detector folder {folder} has no detector.json (write one with `saescope detector train`)")
        try:
            detector = read_detector(folder)
        except DetectorError as error:
            table.fail(str(error))
        # the detector reads latents of one SAE by number: that SAE is loaded like a watched latent's
        return WatchedFeature(id=feature_id, sae=detector["sae"]["name"], label=label, detector=folder)
    latent = data.get("latent")
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 0:
        table.fail(f"'latent' must be a whole number of at least 0, not {latent!r}")
    digest = table.text("decoder_sha256").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        table.fail("'decoder_sha256' must be 64 hexadecimal digits (sha256 of the float32 decoder row)")
    min_cosine = table.number("min_cosine", low=0.0)
    if min_cosine is not None and min_cosine > 1:
        table.fail(f"'min_cosine' must be at most 1, not {min_cosine:g}")
    return WatchedFeature(
        id=feature_id,
        sae=table.text("sae"),
        latent=latent,
        decoder_sha256=digest,
        decoder_row=_decoder_row(table, base, digest),
        min_cosine=DEFAULT_MIN_COSINE if min_cosine is None else min_cosine,
        label=label,
    )


_CHECK_KEYS = {"id", "feature", "expect", "texts", "texts_file"}
_EXPECT_KEYS = {
    "fires_at_least": {"threshold"},
    "fires_at_most": {"threshold"},
    "mean_rise_at_most": {"max_rise", "max_rise_fraction", "baseline_mean"},
    "steering_raises": {"coefficient", "tokens", "min_logprob_rise", "method"},
}


def _check(data: object, index: int, base: Path, features: dict[str, WatchedFeature]) -> Check:
    if not isinstance(data, dict):
        raise WatchlistError(f"checks[{index}] must be a table ([[checks]])")
    where = f"checks[{index}]" + (f" (id {data['id']!r})" if isinstance(data.get("id"), str) else "")
    expect = data.get("expect")
    if expect not in EXPECTATIONS:
        raise WatchlistError(f"{where}: 'expect' must be one of {', '.join(EXPECTATIONS)}, not {expect!r}")
    table = _Table(data, where, _CHECK_KEYS | _EXPECT_KEYS[expect])
    feature = table.text("feature")
    if feature not in features:
        table.fail(f"feature {feature!r} is not one of the [[features]] ids ({', '.join(features) or 'none'})")
    common = {"id": table.text("id"), "feature": feature, "expect": expect, "texts": _read_texts(table, base)}
    if expect in ("fires_at_least", "fires_at_most"):
        return Check(**common, threshold=table.number("threshold", required=True))
    if expect == "mean_rise_at_most":
        rise, fraction = table.number("max_rise", low=0.0), table.number("max_rise_fraction", low=0.0)
        if (rise is None) == (fraction is None):
            table.fail("give exactly one of 'max_rise' (activation units) and 'max_rise_fraction' (of the baseline)")
        return Check(**common, max_rise=rise, max_rise_fraction=fraction, baseline_mean=table.number("baseline_mean"))
    if features[feature].detector is not None:
        table.fail("steering_raises needs an SAE latent: a detector has no single direction to steer along")
    from analysis.steering_methods import METHODS  # torch-free table of the steering methods

    method = table.text("method", "additive")
    if method not in METHODS:
        table.fail(f"'method' must be one of {', '.join(METHODS)}, not {method!r}")
    tokens = table.strings("tokens")
    if not tokens:
        table.fail("'tokens' must list the tokens the steering should move up, e.g. [\" unto\"]")
    coefficient = table.number("coefficient", required=True)
    return Check(
        **common,
        coefficient=coefficient,
        tokens=tokens,
        min_logprob_rise=table.number("min_logprob_rise") or 0.0,
        method=method,
    )


def load_watchlist(path: str | Path, raw: bytes | None = None) -> Watchlist:
    """Read and check a watchlist file (or ``raw``, its content, e.g. typed on the dashboard; ``path``
    then names it and relative paths in it are read from its folder); WatchlistError (one line,
    starting with the file's path) for anything wrong with it."""
    path = Path(path)
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise WatchlistError(f"watchlist {path} cannot be read ({error.strerror or error})") from None
    try:
        return _parse(path, raw)
    except WatchlistError as error:
        message = str(error)
        raise WatchlistError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _parse(path: Path, raw: bytes) -> Watchlist:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise WatchlistError(f"{path} is not valid TOML: {error}") from None
    top = _Table(data, str(path), {"format", "name", "description", "features", "checks"})
    version = data.get("format")
    if version != FORMAT:
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
            top.fail(f"format {version} is newer than this SAEscope reads ({FORMAT}); upgrade SAEscope")
        top.fail(f"'format = {FORMAT}' must be the file's first setting (found {version!r})")
    base = path.parent
    feature_list = data.get("features")
    if not isinstance(feature_list, list) or not feature_list:
        top.fail("no [[features]]: name at least one feature to watch")
    features: dict[str, WatchedFeature] = {}
    for index, item in enumerate(feature_list):
        feature = _feature(item, index, base)
        if feature.id in features:
            raise WatchlistError(f"{path}: two features have the id {feature.id!r}")
        features[feature.id] = feature
    check_list = data.get("checks")
    if not isinstance(check_list, list) or not check_list:
        top.fail("no [[checks]]: state at least one expectation")
    checks = [_check(item, index, base, features) for index, item in enumerate(check_list)]
    ids = [c.id for c in checks]
    if len(set(ids)) != len(ids):
        top.fail(f"two checks have the id {next(i for i in ids if ids.count(i) > 1)!r}")
    return Watchlist(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        name=top.text("name"),
        description=top.text("description", ""),
        features=features,
        checks=tuple(checks),
    )


def _value(value: object) -> str:
    """A TOML value. JSON's string escapes are all valid in TOML basic strings, so json.dumps writes strings."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(name: str, description: str, features: list[dict], checks: list[dict]) -> str:
    """A watchlist file's text. The standard library reads TOML but does not write it; the format's
    values are only strings, numbers and lists of them, so this writer is a few lines rather than a dependency."""
    lines = [f"format = {FORMAT}", f"name = {_value(name)}", f"description = {_value(description)}"]
    for kind, tables in (("features", features), ("checks", checks)):
        for table in tables:
            lines += ["", f"[[{kind}]]"]
            lines += [f"{key} = {_value(value)}" for key, value in table.items() if value is not None]
    return "\n".join(lines) + "\n"
