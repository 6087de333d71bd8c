"""A watchlist run: resolve the watched features in the SAEs given, measure every check on the new
model (and the baseline model where a check compares), decide, and record the run.

Every run is one JSON file, ``RUN_ID.json``, in the runs folder (``--runs-dir``, else
``$SAESCOPE_WATCH_RUNS``, else ``~/.local/share/saescope/watch_runs``); evidence packs read it by its
id. The record names the exact weights (content hashes of the model, the baseline and each SAE,
analysis/content_hash.py), the watchlist file's sha256, library versions, who ran it and when.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from analysis.governance.versions import library_versions
from analysis.governance.watchlist_file import Check, Watchlist, WatchlistError, load_watchlist

RECORD_FORMAT = 1
RUNS_ENV = "SAESCOPE_WATCH_RUNS"
RECORD_KEYS = {"run_id", "started_at", "user", "watchlist", "model", "baseline", "checks", "passed", "counts"}
LIBRARIES = ("saescope", "torch", "transformers", "transformer-lens", "sae-lens", "numpy")


def runs_dir(given: str | Path | None = None) -> Path:
    """Where run records go: the folder given, else $SAESCOPE_WATCH_RUNS, else the user's data folder."""
    if given:
        return Path(given).expanduser()
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    return Path.home() / ".local" / "share" / "saescope" / "watch_runs"


def new_run_id(now: datetime) -> str:
    """Sortable by time, unique without a lock: ``20261130T203000Z-1a2b3c``."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class CheckResult:
    """One check's outcome: ``status`` is passed, failed or skipped, with the numbers it was decided on."""

    id: str
    feature: str
    expect: str
    status: str
    summary: str  # one line: what was measured against what was allowed
    measured: dict = field(default_factory=dict)


def _fires(check: Check, maxima: list[float]) -> CheckResult:
    assert check.threshold is not None, "fires checks have a threshold"
    if check.expect == "fires_at_least":
        offending = [i for i, value in enumerate(maxima) if value < check.threshold]
        worst, relation = min(maxima), "≥"
    else:
        offending = [i for i, value in enumerate(maxima) if value > check.threshold]
        worst, relation = max(maxima), "≤"
    status = "failed" if offending else "passed"
    summary = (
        f"max activation per text {relation} {check.threshold:g} on {len(maxima) - len(offending)} of {len(maxima)} "
        f"texts (worst {worst:.4g})"
    )
    return CheckResult(
        check.id, check.feature, check.expect, status, summary, {"text_maxima": maxima, "offending_texts": offending}
    )


def _rise(check: Check, new_mean: float, tokens: int, baseline_mean: float, source: str) -> CheckResult:
    rise = new_mean - baseline_mean
    if check.max_rise is not None:
        allowed, what = check.max_rise, f"{check.max_rise:g}"
    else:
        assert check.max_rise_fraction is not None, "rise checks have a max_rise or a max_rise_fraction"
        allowed, what = check.max_rise_fraction * baseline_mean, f"{check.max_rise_fraction:g} × baseline"
    status = "passed" if rise <= allowed else "failed"
    summary = f"mean {new_mean:.4g} vs baseline {baseline_mean:.4g} ({source}): rise {rise:+.4g}, allowed {what}"
    measured = {
        "mean": new_mean,
        "baseline_mean": baseline_mean,
        "baseline_source": source,
        "rise": rise,
        "allowed_rise": allowed,
        "tokens": tokens,
    }
    return CheckResult(check.id, check.feature, check.expect, status, summary, measured)


def _steering(check: Check, rises: dict[str, float]) -> CheckResult:
    short = [token for token, rise in rises.items() if not rise > check.min_logprob_rise]
    status = "failed" if short else "passed"
    listed = ", ".join(f"{token!r} {rise:+.3f}" for token, rise in rises.items())
    summary = f"log-prob rise when steered by {check.coefficient:g} (needs > {check.min_logprob_rise:g}): {listed}"
    return CheckResult(check.id, check.feature, check.expect, status, summary, {"logprob_rises": rises})


def evaluate(watchlist: Watchlist, resolved: dict, live, baseline=None) -> list[CheckResult]:
    """Every check of ``watchlist`` on ``live`` (a LiveModel), comparing with ``baseline`` (another
    LiveModel with the same SAEs) where a rise check has no recorded baseline mean or a baseline is given.
    A rise check with neither is skipped (the command line refuses it before loading anything)."""
    from analysis.governance.watch_checks import mean_activation, steering_rises, text_maxima

    results = []
    for check in watchlist.checks:
        where = resolved[check.feature]
        if check.expect in ("fires_at_least", "fires_at_most"):
            results.append(_fires(check, text_maxima(live, where, check.texts)))
        elif check.expect == "steering_raises":
            results.append(_steering(check, steering_rises(live, where, check)))
        else:
            mean, tokens = mean_activation(live, where, check.texts)
            if baseline is not None:
                base_mean, _ = mean_activation(baseline, where, check.texts)
                results.append(_rise(check, mean, tokens, base_mean, "baseline model"))
            elif check.baseline_mean is not None:
                results.append(_rise(check, mean, tokens, check.baseline_mean, "recorded in the watchlist"))
            else:
                results.append(
                    CheckResult(
                        check.id,
                        check.feature,
                        check.expect,
                        "skipped",
                        f"mean {mean:.4g}; needs a baseline model (or baseline_mean in the watchlist) to compare",
                        {"mean": mean, "tokens": tokens},
                    )
                )
    return results


@dataclass(frozen=True)
class RunRequest:
    """What ``saescope watch run`` was asked; ``check_request`` vets it before anything loads."""

    watchlist: Path
    model: str
    baseline: str | None
    saes: tuple[str, ...]
    device: str | None = None
    dtype: str = "float32"
    runs: Path | None = None
    junit: Path | None = None
    summary: Path | None = None


def _model_folder_problem(spec: str, flag: str) -> str | None:
    path = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file():
        return f"{flag} {spec} is not a model folder (no config.json there)"
    return None


def check_request(request: RunRequest) -> Watchlist:
    """The parsed watchlist, after checking everything that needs no model: the file, that a baseline
    is given where a check needs one, the model folders, the SAE folders and the output paths."""
    from analysis import preflight

    watchlist = load_watchlist(request.watchlist)
    needing = [c.id for c in watchlist.checks if c.needs_baseline_model]
    if needing and request.baseline is None:
        raise WatchlistError(
            f"check {needing[0]!r} compares with a baseline: give --baseline MODEL (or baseline_mean in the watchlist)"
        )
    for spec, flag in ((request.model, "--model"), (request.baseline, "--baseline")):
        if spec is not None and (problem := _model_folder_problem(spec, flag)):
            raise WatchlistError(problem)
    for spec in request.saes:
        if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
            raise WatchlistError(f"--sae {spec} is not a folder")
    for path, flag in ((request.junit, "--junit"), (request.summary, "--summary")):
        if path is not None:
            preflight.output_file(path, flag, overwrite=True)
    folder = runs_dir(request.runs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WatchlistError(f"the runs folder {folder} cannot be created ({error.strerror or error})") from None
    return watchlist


def _load_saes(watchlist: Watchlist, specs: tuple[str, ...], device: str | None) -> dict:
    from analysis.devices import pick_device
    from analysis.sae_loading import load_saes

    loaded = {sae.name: sae for spec in specs for sae in load_saes(spec, device=pick_device(device))}
    missing = [name for name in watchlist.sae_names if name not in loaded]
    if missing:
        raise WatchlistError(
            f"the watchlist watches SAE {missing[0]!r}, which none of the --sae folders has "
            f"(they have: {', '.join(loaded) or 'none'})"
        )
    return {name: loaded[name] for name in watchlist.sae_names}


def _live(spec: str, saes: dict, device: str | None, dtype: str):
    from analysis.live_model import LiveModel
    from analysis.model_loading import load_model
    from analysis.sae_loading import check_fits

    loaded = load_model(spec, device=device, dtype=dtype)
    check_fits(loaded.model, list(saes.values()))
    return LiveModel(loaded=loaded, saes=saes)


def record_run(
    watchlist: Watchlist,
    results: list[CheckResult],
    resolved: dict,
    models: dict,
    saes: dict[str, dict],
    started: datetime,
    seconds: float,
    folder: Path,
    user: str | None = None,
) -> dict:
    """Write the run's record, ``RUN_ID.json`` in ``folder``, and return it."""
    passed = all(r.status == "passed" for r in results)
    record = {
        "format": RECORD_FORMAT,
        "run_id": new_run_id(started),
        "started_at": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
        "user": user or getpass.getuser(),
        "host": socket.gethostname(),
        "command": sys.argv,
        "watchlist": {
            "path": str(watchlist.path),
            "sha256": watchlist.sha256,
            "name": watchlist.name,
            "description": watchlist.description,
        },
        "model": models.get("model"),
        "baseline": models.get("baseline"),
        "saes": saes,
        "features": [asdict(r) for r in resolved.values()],
        "checks": [asdict(r) for r in results],
        "passed": passed,
        "counts": {s: sum(r.status == s for r in results) for s in ("passed", "failed", "skipped")},
        "libraries": library_versions(LIBRARIES),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['run_id']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a record
    return record


def measure_and_record(
    watchlist: Watchlist,
    live,
    model_spec: str,
    folder: Path | None,
    baseline=None,
    baseline_spec: str | None = None,
    user: str | None = None,
) -> dict:
    """Resolve the features in ``live``'s SAEs, run every check, and record the run in ``folder``
    (None: not written, e.g. on a read-only dashboard); the record."""
    from analysis.content_hash import sae_hash
    from analysis.governance.watch_checks import resolve, resolve_detector, token_ids

    started, clock = datetime.now(UTC), time.perf_counter()
    missing = [name for name in watchlist.sae_names if name not in live.saes]
    if missing:
        raise WatchlistError(f"the watchlist watches SAE {missing[0]!r}, which is not loaded")
    resolved = {
        f.id: resolve(f, live.saes[f.sae]) if f.detector is None else resolve_detector(f, live)
        for f in watchlist.features.values()
    }
    for check in watchlist.checks:  # a token that is not one token is bad input: refuse before measuring
        if check.expect == "steering_raises":
            token_ids(live, check.tokens)
    results = evaluate(watchlist, resolved, live, baseline)
    models: dict[str, dict] = {"model": {"spec": model_spec, "content_hash": live.model_hash}}
    if baseline is not None:
        models["baseline"] = {"spec": baseline_spec, "content_hash": baseline.model_hash}
    saes = {
        name: {"spec": live.saes[name].spec, "content_hash": sae_hash(live.saes[name])} for name in watchlist.sae_names
    }
    seconds = time.perf_counter() - clock
    if folder is None:
        record = {"run_id": None, "started_at": started.isoformat(timespec="seconds"), "seconds": seconds}
        return record | {"checks": [asdict(r) for r in results], "passed": all(r.status == "passed" for r in results)}
    return record_run(watchlist, results, resolved, models, saes, started, seconds, folder, user)


def run(request: RunRequest, watchlist: Watchlist) -> dict:
    """Load the SAEs, resolve the features (refusing before any model loads), load the model(s),
    measure, decide and record (``check_request`` first); the run's record."""
    from analysis.governance.watch_checks import resolve

    saes = _load_saes(watchlist, request.saes, request.device)
    for feature in watchlist.features.values():
        if feature.detector is None:
            resolve(feature, saes[feature.sae])
    live = _live(request.model, saes, request.device, request.dtype)
    rise_checks = any(c.expect == "mean_rise_at_most" for c in watchlist.checks)
    baseline = None
    if request.baseline and rise_checks:
        baseline = _live(request.baseline, saes, request.device, request.dtype)
    return measure_and_record(watchlist, live, request.model, runs_dir(request.runs), baseline, request.baseline)


def read_runs(folder: Path, limit: int = 200) -> list[dict]:
    """The newest run records in ``folder`` first (files that are not whole records are left out)."""
    records = []
    for path in sorted(folder.glob("*.json"), reverse=True)[:limit]:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("format") == RECORD_FORMAT and RECORD_KEYS <= record.keys():
            records.append(record)
    return records
