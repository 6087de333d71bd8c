"""The files of a detector: the labelled JSONL it is trained on, and the folder it is written to
(``detector.json``: what to run; ``metrics.json``: how it did against its baselines).

Torch-free, so the CLI checks every input before a model loads, and the dashboard and the evidence
pack read detectors without torch. ``detector.json`` and ``metrics.json`` are read by other tools
(evidence packs): their names and top-level keys are a contract (docs/GOVERNANCE.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from analysis.errors import SAEscopeError

DETECTOR_FILE = "detector.json"
METRICS_FILE = "metrics.json"
FORMAT = "saescope-detector/1"
MAX_ROWS = 200_000
MAX_TEXT_CHARS = 100_000
MIN_PER_CLASS = 4  # per class in each of the train and test splits


class DetectorError(SAEscopeError, ValueError):
    """A labelled file, detector folder or setting that cannot be used; the message says why."""


@dataclass(frozen=True)
class LabelledText:
    """One training row: ``label`` 1 for the class the detector fires on; ``spans`` are optional
    character ranges of the evidence (the PII itself), kept for the record."""

    text: str
    label: int
    spans: tuple[tuple[int, int], ...] = ()


def _label(value: object, where: str) -> int:
    if isinstance(value, bool) or value in (0, 1):
        return int(value)  # type: ignore[arg-type]
    raise DetectorError(f"{where}: 'label' must be 0, 1, true or false, not {json.dumps(value)[:40]}")


def _spans(value: object, text: str, where: str) -> tuple[tuple[int, int], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DetectorError(f"{where}: 'spans' must be a list of [start, end] character offsets")
    spans = []
    for span in value:
        ok = isinstance(span, list) and len(span) == 2 and all(type(v) is int for v in span)
        if not ok or not 0 <= span[0] < span[1] <= len(text):
            raise DetectorError(
                f"{where}: span {json.dumps(span)[:40]} is not [start, end] with 0 <= start < end <= {len(text)}"
            )
        spans.append((span[0], span[1]))
    return tuple(spans)


def _text(row: dict, where: str) -> str:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DetectorError(f"{where}: 'text' must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise DetectorError(f"{where}: the text has {len(text):,} characters; at most {MAX_TEXT_CHARS:,} are taken")
    return text


def _rows(lines: Iterable[str], source: str) -> Iterable[tuple[str, dict]]:
    """Each non-blank line as (where, object), refusing lines that are not JSON objects."""
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        count += 1
        if count > MAX_ROWS:
            raise DetectorError(f"{source} has more than {MAX_ROWS:,} rows")
        where = f"{source} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DetectorError(f"{where} is not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise DetectorError(f"{where} is not a JSON object with a 'text' field")
        yield where, row


def parse_labelled(lines: Iterable[str], source: str) -> list[LabelledText]:
    """Rows ``{"text": ..., "label": 0|1, "spans": [[start, end], ...]}`` (``spans`` optional)."""
    parsed = []
    for where, row in _rows(lines, source):
        text = _text(row, where)
        if "label" not in row:
            raise DetectorError(f"{where} has no 'label' (0 or 1)")
        parsed.append(LabelledText(text, _label(row["label"], where), _spans(row.get("spans"), text, where)))
    return parsed


def parse_texts(lines: Iterable[str], source: str) -> list[str]:
    """The ``text`` of each row (other fields ignored): what ``detector run --data`` scores."""
    texts = [_text(row, where) for where, row in _rows(lines, source)]
    if not texts:
        raise DetectorError(f"{source} has no rows")
    return texts


def _lines(path: Path, flag: str) -> list[str]:
    if not path.is_file():
        raise DetectorError(f"{flag} {path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DetectorError(f"{flag} {path} is not UTF-8 text") from None
    except OSError as error:
        raise DetectorError(f"{flag} {path} cannot be read ({error.strerror or error})") from None


def read_labelled(path: Path, flag: str = "--data") -> list[LabelledText]:
    return parse_labelled(_lines(path, flag), str(path))


def read_texts(path: Path, flag: str = "--data") -> list[str]:
    return parse_texts(_lines(path, flag), str(path))


def check_trainable(rows: list[LabelledText], test_fraction: float) -> None:
    """Enough rows of both classes that each split holds ``MIN_PER_CLASS`` of each."""
    for label in (0, 1):
        count = sum(row.label == label for row in rows)
        in_test = math.floor(count * test_fraction)
        if min(in_test, count - in_test) < MIN_PER_CLASS:
            need = math.ceil(MIN_PER_CLASS / min(test_fraction, 1 - test_fraction))
            raise DetectorError(
                f"only {count} rows have label {label}; with a test fraction of {test_fraction:g} a detector "
                f"needs at least {need} of each label"
            )


def check_out_dir(path: Path, overwrite: bool) -> None:
    """A folder to write a detector into: new, empty, or (with ``overwrite``) one holding a detector."""
    if path.exists() and not path.is_dir():
        raise DetectorError(f"--out {path} is a file; give a folder for {DETECTOR_FILE} and {METRICS_FILE}")
    if path.is_dir() and any(path.iterdir()):
        if not (path / DETECTOR_FILE).exists():
            raise DetectorError(f"--out {path} is a folder with other files in it; give a new or empty folder")
        if not overwrite:
            raise DetectorError(f"--out {path} already holds a detector; pass --overwrite to replace it")
    if not path.exists() and not path.parent.is_dir():
        raise DetectorError(f"--out {path}: the folder {path.parent} does not exist")


def write_detector(folder: Path, detector: dict, metrics: dict) -> None:
    folder.mkdir(exist_ok=True)
    (folder / DETECTOR_FILE).write_text(json.dumps(detector, indent=2) + "\n", encoding="utf-8")
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")


def read_json(folder: Path, name: str) -> dict:
    path = folder / name
    if not path.is_file():
        raise DetectorError(f"{folder} is not a detector folder: it has no {name}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DetectorError(f"{path} is not readable JSON ({error})") from None
    if not isinstance(value, dict):
        raise DetectorError(f"{path} is not a JSON object")
    return value


def read_detector(folder: Path) -> dict:
    """``detector.json`` after checking it is one this version runs."""
    detector = read_json(folder, DETECTOR_FILE)
    if detector.get("format") != FORMAT:
        raise DetectorError(f"{folder / DETECTOR_FILE} is not a {FORMAT} file (format {detector.get('format')!r})")
    missing = [key for key in ("model", "sae", "pool", "features", "intercept", "threshold") if key not in detector]
    if missing:
        raise DetectorError(f"{folder / DETECTOR_FILE} lacks {', '.join(missing)}")
    return detector


def feature_url(base: str, atlas_key: str, sae: str, latent: int) -> str:
    """The dashboard's feature page for a latent, as the Search-by-text page links it (relative
    to the dashboard when ``base`` is empty)."""
    prefix = f"{base.rstrip('/')}/" if base else ""
    return f"{prefix}Feature?" + urlencode({"atlas": atlas_key, "sae": sae, "latent": latent})


def portable_spec(spec: str, repo_root: Path) -> str:
    """A local path inside the checkout as a path relative to it (so a detector trained on the
    demo runs from any folder and any clone); another local path absolute; a hub id as given."""
    path = Path(spec).expanduser()
    if not path.exists():
        return spec
    try:
        return str(path.resolve().relative_to(repo_root))
    except ValueError:
        return str(path.resolve())


def one_sae_spec(spec: str, name: str) -> str:
    """The spec of the one SAE ``name`` that ``spec`` loaded: its own folder when ``spec`` is a
    folder of SAE folders (as an atlas records the demo's), else ``spec``."""
    folder = Path(spec).expanduser() / name
    return str(folder) if (folder / "cfg.json").is_file() else spec
