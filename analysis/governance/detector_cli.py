"""``python -m analysis detector train|run|demo-data``: the detector subcommand, registered on the
CLI by ``add_detector_command``. Every argument and input file is checked here before torch is
imported or a model loads, so a typo costs a second."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from analysis import preflight
from analysis.governance.detector_files import (
    DetectorError,
    check_out_dir,
    check_trainable,
    portable_spec,
    read_detector,
    read_labelled,
    read_texts,
)
from analysis.paths import DEMO_ATLAS, DEMO_MODEL, DEMO_SAES, REPO_ROOT

DEMO_SAE = DEMO_SAES / "resid-L2"
MAX_DEMO_ROWS = 100_000


def _resolved(spec: str) -> str:
    """A recorded spec back to something loadable: repo-relative paths against the checkout."""
    candidate = REPO_ROOT / spec
    return str(candidate) if not Path(spec).is_absolute() and candidate.exists() else spec


def _check_local(spec: str, flag: str, one_sae: bool = False) -> None:
    """A local model or SAE folder must exist; an SAE spec must name one SAE, not a folder of them."""
    path = Path(spec).expanduser()
    if spec.startswith((".", "/", "~")) and not path.is_dir():
        raise DetectorError(f"{flag} {spec}: no such folder")
    if one_sae and path.is_dir() and not (path / "cfg.json").exists():
        inside = sorted(child.name for child in path.iterdir() if (child / "cfg.json").exists())
        if inside:
            raise DetectorError(
                f"{flag} {spec} holds {len(inside)} SAEs; a detector reads one: give one of its folders "
                f"({', '.join(inside[:5])})"
            )
        raise DetectorError(f"{flag} {spec} holds no SAE (no cfg.json)")


def _load(model: str, sae: str, device: str | None):
    from analysis.live_model import LiveSpecs, load_live

    return load_live(LiveSpecs(model=_resolved(model), saes=(_resolved(sae),)), device=device)


def load_for_detector(detector: dict, device: str | None):
    """The model and SAE a detector names (repo-relative specs resolved against this checkout)."""
    return _load(detector["model"]["spec"], detector["sae"]["spec"], device)


def _run_train(args: argparse.Namespace) -> int:
    rows = read_labelled(Path(args.data))
    check_trainable(rows, args.test_fraction)
    out = Path(args.out)
    check_out_dir(out, args.overwrite)
    _check_local(args.model, "--model")
    _check_local(args.sae, "--sae", one_sae=True)
    if args.atlas and not Path(args.atlas).is_file():
        raise DetectorError(f"--atlas {args.atlas}: no such file (give '' to train without feature labels)")
    from analysis.governance.detector_files import write_detector
    from analysis.governance.detector_report import print_training
    from analysis.governance.detector_train import TrainSettings, train_detector

    live = _load(args.model, args.sae, args.device)
    [sae_name] = live.saes
    labels = _atlas_labels(args.atlas, live, sae_name)
    settings = TrainSettings(
        pool=args.pool,
        top_k=args.top_k,
        test_fraction=args.test_fraction,
        seed=args.seed,
        regex=not args.no_regex,
        cost_texts=args.cost_texts,
        dashboard_url=args.dashboard_url,
        atlas_key=args.atlas_key,
    )
    trained = train_detector(
        live,
        sae_name,
        rows,
        settings,
        (portable_spec(args.model, REPO_ROOT), portable_spec(args.sae, REPO_ROOT)),
        labels,
    )
    write_detector(out, trained.detector, trained.metrics)
    if args.json:
        print(json.dumps({"detector": trained.detector, "metrics": trained.metrics}, indent=2))
    else:
        print_training(trained.detector, trained.metrics, out)
    return 0


def _atlas_labels(atlas: str | None, live, sae_name: str) -> dict[tuple[str, int], str]:
    """The atlas's automatic labels for this SAE's latents, when the atlas was built from this SAE."""
    if not atlas:
        return {}
    from analysis.atlas.reader import feature_labels, sae_records

    records = {r["name"]: r for r in sae_records(Path(atlas))}
    if records.get(sae_name, {}).get("content_hash") != live.sae_hashes[sae_name]:
        return {}
    return feature_labels(Path(atlas), [(sae_name, latent) for latent in range(live.saes[sae_name].d_sae)])


def _run_run(args: argparse.Namespace) -> int:
    folder = Path(args.detector)
    detector = read_detector(folder)
    texts = args.text if args.text else read_texts(Path(args.data))
    if any(not text.strip() for text in texts):
        raise DetectorError("--text is empty: give the text to score")
    from analysis.governance.detector_report import print_scores
    from analysis.governance.detector_run import score_texts

    live = load_for_detector(detector, args.device)
    scores = score_texts(live, detector, texts)
    if args.json:
        print(json.dumps({"detector": str(folder), "results": [s.as_json() for s in scores]}, indent=2))
    else:
        print_scores(scores, detector["threshold"])
    return 0


def _run_demo_data(args: argparse.Namespace) -> int:
    out = Path(args.out)
    preflight.output_file(out, overwrite=args.overwrite)
    from analysis.governance.pii_data import generate

    rows = generate(args.n, args.seed)
    with out.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} rows ({sum(r['label'] for r in rows)} with PII) written to {out}")
    return 0


def add_detector_command(commands: argparse._SubParsersAction) -> None:
    """Register ``detector`` with its actions on the CLI's subcommands."""
    detector = commands.add_parser(
        "detector",
        help="feature detectors: probes on SAE latents, reported beside a dense probe and a regex baseline",
        description="Train and run detectors: sparse logistic probes over one SAE's latents (docs/GOVERNANCE.md).",
    )
    actions = detector.add_subparsers(dest="action", required=True, metavar="<action>")
    train = actions.add_parser(
        "train",
        help="train a detector on labelled JSONL and report it against its baselines",
        description="Fit a sparse logistic probe on the SAE's pooled latents, a dense probe on the raw activations "
        "at the same hook and (unless --no-regex) the PII regex baseline on one split; report precision, recall, "
        "F1, AUROC and the cost against a full forward. Writes OUT/detector.json and OUT/metrics.json.",
    )
    train.add_argument("--data", required=True, help="JSONL rows {text, label (0/1), spans (optional)}")
    train.add_argument("--out", required=True, help="folder to write detector.json and metrics.json into")
    train.add_argument("--model", type=preflight.spec, default=str(DEMO_MODEL), help="model (default: the demo's)")
    train.add_argument("--sae", type=preflight.spec, default=str(DEMO_SAE), help="one SAE (default: demo resid-L2)")
    train.add_argument("--pool", choices=("max", "mean"), default="max", help="pool over tokens (default max)")
    train.add_argument(
        "--top-k",
        type=preflight.whole(1, 100_000),
        help="keep this many latents (largest class-mean gap) instead of choosing them by L1",
    )
    train.add_argument(
        "--test-fraction", type=preflight.number(0.05, 0.95), default=0.25, help="held-out share (default 0.25)"
    )
    train.add_argument("--seed", type=preflight.whole(0, 2**31), default=0, help="split and CV seed (default 0)")
    train.add_argument("--no-regex", action="store_true", help="no PII regex baseline (for tasks other than PII)")
    train.add_argument(
        "--cost-texts",
        type=preflight.whole(0, 1_000_000),
        default=500,
        help="texts to time the detector and a full forward on (default 500; 0: skip)",
    )
    train.add_argument("--atlas", default=str(DEMO_ATLAS), help="atlas whose labels name the features ('' for none)")
    train.add_argument("--atlas-key", default="demo", help="the atlas's key in the dashboard's links (default demo)")
    train.add_argument("--dashboard-url", default="http://localhost:8501", help="base of the feature links")
    train.add_argument("--overwrite", action="store_true", help="replace a detector already in --out")
    train.add_argument("--device", type=preflight.device, default=None, help="cpu, cuda, cuda:N")
    train.add_argument("--json", action="store_true", help="print detector and metrics as JSON")
    train.set_defaults(handler=_run_train)

    run = actions.add_parser(
        "run",
        help="score texts with a trained detector, per text and per token",
        description="Score each text (the detector's probability) and each of its tokens.",
    )
    run.add_argument("detector", help="detector folder (with detector.json)")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", action="append", help="a text to score; repeat for several")
    source.add_argument("--data", help="JSONL file with a 'text' field per row")
    run.add_argument("--device", type=preflight.device, default=None, help="cpu, cuda, cuda:N")
    run.add_argument("--json", action="store_true", help="print JSON with every token's score")
    run.set_defaults(handler=_run_run)

    demo = actions.add_parser(
        "demo-data",
        help="generate the demo's labelled PII data (seeded Faker in held-out demo-corpus passages)",
        description="Write N labelled rows: half with a Faker name, email, phone, address, card number or IBAN "
        "(several locales) put into a held-out demo-corpus passage, half without (some with look-alikes).",
    )
    demo.add_argument("--out", required=True, help="JSONL file to write")
    demo.add_argument("--n", type=preflight.whole(2, MAX_DEMO_ROWS), default=2000, help="rows (default 2000)")
    demo.add_argument("--seed", type=preflight.whole(0, 2**31), default=0, help="the same seed gives the same rows")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing file")
    demo.set_defaults(handler=_run_demo_data)
