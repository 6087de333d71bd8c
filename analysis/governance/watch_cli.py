"""``saescope watch``: run a watchlist against a model (exit 0 when every check holds, 1 when any
fails, 2 on bad input), write one from a feature list, or make the demo's fine-tuned checkpoint.
Registered on the CLI by ``add_watch_command``; every argument is checked before torch is imported."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import preflight
from analysis.errors import UsageError
from analysis.paths import DEMO_MODEL, DEMO_SAES

MAX_TEXTS = 10_000  # as analysis/governance/watchlist_file.py allows (not imported: it needs numpy)


def _write_or_print(text: str, path: Path | None) -> None:
    if path is None:
        print(text)
    else:
        with path.open("a", encoding="utf-8") as handle:  # $GITHUB_STEP_SUMMARY is appended to
            handle.write(text + "\n")


def _run(args: argparse.Namespace) -> int:
    from analysis.governance.watch_run import RunRequest, check_request, run

    request = RunRequest(
        watchlist=Path(args.watchlist),
        model=args.model,
        baseline=args.baseline,
        saes=tuple(args.sae or [str(DEMO_SAES)]),
        device=args.device,
        dtype=args.dtype,
        runs=Path(args.runs_dir) if args.runs_dir else None,
        junit=Path(args.junit) if args.junit else None,
        summary=Path(args.summary) if args.summary else None,
    )
    watchlist = check_request(request)  # before any model loads: a bad file costs a second
    record = run(request, watchlist)
    from analysis.governance.watch_report import junit_xml, markdown_summary

    if request.junit is not None:
        request.junit.write_bytes(junit_xml(record))
    _write_or_print(markdown_summary(record), request.summary)
    counts = record["counts"]
    print(
        f"watchlist {watchlist.name}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} "
        f"skipped; run {record['run_id']}",
        file=sys.stderr,
    )
    return 0 if record["passed"] else 1


def _texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.text or [])
    if args.texts_file:
        try:
            texts += [line for line in Path(args.texts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--texts-file {args.texts_file} cannot be read ({error})") from None
    if not texts:
        raise UsageError("give the texts the checks measure on: --text (repeat) or --texts-file")
    if len(texts) > MAX_TEXTS:
        raise UsageError(f"{len(texts):,} texts: a watchlist check takes at most {MAX_TEXTS:,}")
    return texts


def _list_items(args: argparse.Namespace):
    """The saved list's items, read before any model loads (one line, exit 2, for a list that is not there)."""
    from dashboard.shell.settings import load_settings
    from dashboard.userdata import open_user_store

    store = open_user_store(Path(args.user_db) if args.user_db else load_settings().user_db, read_only=True)
    try:
        items = store.list_items(args.list)
    finally:
        store.close()
    if items.empty:
        raise UsageError(f"the list {args.list!r} has no features")
    return items


def _build(args: argparse.Namespace) -> int:
    from analysis.steering_target import SteeringTarget

    targets = [SteeringTarget.parse(text) for text in args.feature or []]
    texts = _texts(args)
    out = Path(args.out) if args.out else None
    if out is not None:
        preflight.output_file(out, overwrite=args.overwrite)
    items = _list_items(args) if args.list else None
    from analysis.governance.watch_build import build_watchlist, list_targets
    from analysis.live_model import LiveSpecs, load_live

    live = load_live(LiveSpecs(model=args.model, saes=tuple(args.sae or [str(DEMO_SAES)])), device=args.device)
    if items is not None:
        targets, missing = list_targets(items, live.sae_hashes)
        if not targets:
            raise UsageError(
                f"none of the {missing} features of list {args.list!r} is on the loaded SAEs "
                f"({', '.join(live.saes)}); give the SAEs it was made on with --sae"
            )
        if missing:
            print(f"{missing} of the list's features are on SAEs not loaded: left out", file=sys.stderr)
    text = build_watchlist(live, targets, texts, args.name, args.max_rise_fraction)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    where = out or "stdout"
    print(f"watchlist of {len(dict.fromkeys(targets))} features, {len(texts)} texts -> {where}", file=sys.stderr)
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from analysis.governance.finetune_demo import FinetuneSettings, check_out, finetune

    settings = FinetuneSettings(
        domain=args.domain,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed,
        lr=args.lr,
        batch_size=args.batch,
        context=args.context,
    )
    settings.check()
    out = Path(args.out)
    check_out(out, args.overwrite)
    record = finetune(settings, out)
    print(
        f"fine-tuned {record['steps_done']} steps on {args.domain} in {record['train_seconds']} s: domain loss "
        f"{record['domain_loss_before']} -> {record['domain_loss_after']} -> {out}"
    )
    return 0


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sae", type=preflight.spec, action="append", help="SAE folder or spec (default: the demo's)")
    parser.add_argument(
        "--device", type=preflight.device, default=None, help="cpu, cuda, cuda:N (default: CUDA if any)"
    )


def add_watch_command(commands: argparse._SubParsersAction) -> None:
    """Register ``watch`` and its actions (run, build, finetune-demo) on the CLI's subcommands."""
    from analysis.governance.finetune_demo import DOMAINS

    watch = commands.add_parser(
        "watch",
        help="watchlists: check features of concern on a model, e.g. in CI (docs/GOVERNANCE.md)",
        description="Watchlists name SAE features with expectations; `run` checks them on a model "
        "(exit 0: all hold, 1: some fail, 2: bad input) and records the run. See docs/GOVERNANCE.md.",
    )
    actions = watch.add_subparsers(dest="action", required=True, metavar="<action>")

    run = actions.add_parser("run", help="check a watchlist on a model; JUnit XML, markdown summary, run record")
    run.add_argument("--watchlist", required=True, help="the watchlist file (TOML, format = 1)")
    run.add_argument("--model", type=preflight.spec, default=str(DEMO_MODEL), help="the model checked (default: demo)")
    run.add_argument("--baseline", type=preflight.spec, help="the model to compare mean activations with")
    _model_options(run)
    run.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    run.add_argument("--junit", help="write JUnit XML here (one test case per check)")
    run.add_argument("--summary", help="append the markdown summary here (e.g. $GITHUB_STEP_SUMMARY); default stdout")
    run.add_argument("--runs-dir", help="folder of run records (default: $SAESCOPE_WATCH_RUNS or ~/.local/share/...)")
    run.set_defaults(handler=_run)

    build = actions.add_parser("build", help="write a watchlist from features, recording their mean activation now")
    chosen = build.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--feature", action="append", metavar="SAE:LATENT", help="repeat for several")
    chosen.add_argument("--list", metavar="NAME", help="the features of a saved feature list (the Lists page)")
    build.add_argument(
        "--user-db", help="the user-data file with the list (default: the dashboard's, SAESCOPE_USER_DB)"
    )
    build.add_argument("--text", action="append", help="a text the checks measure on; repeat")
    build.add_argument("--texts-file", help="texts, one per line")
    build.add_argument("--name", default="watchlist", help="the watchlist's name")
    build.add_argument(
        "--max-rise-fraction",
        type=preflight.number(0, 1e6),
        default=0.5,
        help="allowed rise of each feature's mean activation, as a fraction of today's (0.5)",
    )
    build.add_argument("--model", type=preflight.spec, default=str(DEMO_MODEL), help="model measured (default: demo)")
    _model_options(build)
    build.add_argument("--out", help="the watchlist file to write (default: print it)")
    build.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    build.set_defaults(handler=_build)

    tune = actions.add_parser(
        "finetune-demo",
        help="fine-tune the demo model on one domain of the demo corpus (the model-diffing example)",
        description="Train the demo model further on one domain's held-out documents (even-numbered; odd ones "
        "are kept out), a fixed number of steps with one seed; writes a model folder with finetune.json.",
    )
    tune.add_argument("--domain", required=True, choices=DOMAINS)
    tune.add_argument("--out", required=True, help="folder for the checkpoint (outside the repository's tracked files)")
    tune.add_argument("--steps", type=preflight.whole(1, 1_000_000), default=300, help="optimizer steps (300)")
    tune.add_argument("--minutes", type=preflight.number(0, 1e4, low_open=True), default=10.0, help="time cap (10)")
    tune.add_argument("--seed", type=preflight.whole(0, 2**31), default=0)
    tune.add_argument("--lr", type=preflight.number(0, 1, low_open=True), default=3e-4, help="peak learning rate")
    tune.add_argument("--batch", type=preflight.whole(1, 4096), default=8, help="windows per step (8)")
    tune.add_argument("--context", type=preflight.whole(2, 256), default=128, help="tokens per window (128)")
    tune.add_argument("--overwrite", action="store_true", help="replace a checkpoint this command wrote before")
    tune.set_defaults(handler=_finetune)
