"""``saescope evidence``: make an evidence pack of a feature list (``--list NAME ... --out PACK.zip``),
check one (``evidence verify PACK.zip``), or make a signing key pair (``evidence keygen --out DIR``).

Imports nothing heavy at module level: ``saescope --help`` must stay instant (tests/test_cli.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.errors import UsageError
from analysis.paths import DEMO_ATLAS

VERIFY_HELP = "check a pack: exit 0 when intact, 1 naming each changed, missing or extra file, 2 on bad input"


def _run(args: argparse.Namespace) -> int:
    if args.evidence_action == "verify":
        return _run_verify(args)
    if args.evidence_action == "keygen":
        return _run_keygen(args)
    return _run_make(args)


def _run_make(args: argparse.Namespace) -> int:
    if not args.list or not args.out:
        raise UsageError(
            "give --list NAME and --out PACK.zip (or `evidence verify PACK.zip`, `evidence keygen --out DIR`)"
        )
    from analysis.governance.evidence_build import make_pack
    from analysis.governance.evidence_data import EvidenceRequest
    from analysis.governance.evidence_pack import default_author
    from dashboard.shell.settings import load_settings
    from dashboard.userdata import open_user_store

    request = EvidenceRequest(
        list_name=args.list,
        graphs=tuple(args.graph),
        runs=tuple(args.run),
        watch=args.watch,
        watch_runs_dir=Path(args.watch_runs_dir) if args.watch_runs_dir else None,
        detector=Path(args.detector) if args.detector else None,
        atlas=Path(args.atlas),
        examples=args.examples,
    )
    store = open_user_store(Path(args.user_db) if args.user_db else load_settings().user_db, read_only=True)
    try:
        summary = make_pack(
            request,
            store,
            Path(args.out),
            args.by or default_author(),
            sign_key=Path(args.sign_key) if args.sign_key else None,
            pdf=not args.no_pdf,
            overwrite=args.overwrite,
        )
    finally:
        store.close()
    signed = f", signed by key {summary.signed_by[:16]}" if summary.signed_by else ""
    print(
        f"evidence pack of list {args.list!r}: {summary.features} features, {', '.join(summary.files)}{signed}, "
        f"{summary.seconds} s -> {summary.out}"
    )
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from analysis.governance.evidence_verify import verify_pack

    verdict = verify_pack(Path(args.pack), Path(args.public_key) if args.public_key else None)
    for line in verdict.problems + verdict.notes:
        print(line)
    return 0 if verdict.ok else 1


def _run_keygen(args: argparse.Namespace) -> int:
    from analysis.governance.evidence_pack import keygen

    private, public = keygen(Path(args.out))
    print(
        f"private key {private} (keep it secret; sign with --sign-key)\npublic key  {public} (share it; verify with --public-key)"
    )
    return 0


def add_evidence_command(commands: argparse._SubParsersAction, verbose_help: str) -> None:
    """Register ``evidence`` (making a pack) with its ``verify`` and ``keygen`` actions."""
    evidence = commands.add_parser(
        "evidence",
        help="an evidence pack of a feature list: report (HTML, PDF), data, manifest, checksums, signature",
        description="Make one zip a committee can read and check: a self-contained report (HTML and its PDF), "
        "the data as JSON (features with statistics, examples, annotations and audit trails, attached graphs, "
        "steering runs, detector metrics and watchlist run), a manifest of hashes and versions, and SHA256SUMS. "
        "`evidence verify PACK.zip` checks one, `evidence keygen --out DIR` makes a signing key pair. "
        "See docs/GOVERNANCE.md.",
        usage="saescope evidence [-h] --list NAME [options] --out PACK.zip\n"
        "       saescope evidence verify PACK.zip [--public-key KEY]\n"
        "       saescope evidence keygen --out DIR",
    )
    evidence.add_argument("--list", metavar="NAME", help="the feature list (from the Lists page) the pack is about")
    evidence.add_argument(
        "--graph",
        action="append",
        default=[],
        metavar="ID",
        help="a saved graph's id (or its first 8 characters); repeatable",
    )
    evidence.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="ID",
        help="a steering run's id (or its first 8 characters); repeatable",
    )
    evidence.add_argument(
        "--watch", metavar="RUN", help="a watchlist run: RUN.json in the watch runs folder, or a path to one"
    )
    evidence.add_argument(
        "--watch-runs-dir",
        metavar="DIR",
        help="the watch runs folder (default SAESCOPE_WATCH_RUNS or ~/.local/share/saescope/watch_runs)",
    )
    evidence.add_argument("--detector", metavar="DIR", help="a trained detector's folder (detector.json, metrics.json)")
    evidence.add_argument(
        "--atlas",
        default=str(DEMO_ATLAS),
        help="atlas for the features' statistics and examples (default: the demo atlas)",
    )
    evidence.add_argument("--user-db", help="the user-data file (default: the dashboard's, SAESCOPE_USER_DB)")
    evidence.add_argument("--by", metavar="NAME", help="who generated the pack (default cli:<your user name>)")
    evidence.add_argument(
        "--examples", type=int, default=5, help="top examples per feature in the report (0 to 50, default 5)"
    )
    evidence.add_argument(
        "--sign-key", metavar="KEY.pem", help="sign SHA256SUMS with this Ed25519 private key (evidence keygen)"
    )
    evidence.add_argument("--no-pdf", action="store_true", help="leave the PDF out (no Chromium needed)")
    evidence.add_argument("--overwrite", action="store_true", help="replace an existing file at --out")
    evidence.add_argument("--out", metavar="PACK.zip", help="the pack to write")
    actions = evidence.add_subparsers(dest="evidence_action", metavar="[verify | keygen]")
    verify = actions.add_parser(
        "verify", prog="saescope evidence verify", help=VERIFY_HELP, description=VERIFY_HELP + "."
    )
    verify.add_argument("pack", help="the pack (.zip)")
    verify.add_argument(
        "--public-key", metavar="KEY", help="the operator's Ed25519 public key (PEM): check the signature too"
    )
    keygen = actions.add_parser(
        "keygen",
        prog="saescope evidence keygen",
        help="make an Ed25519 key pair for signing packs",
        description="Write evidence-signing-key.pem (private, mode 600) and evidence-signing-key.pub.pem to DIR; never overwrites.",
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair")
    for action in (verify, keygen):
        action.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    evidence.set_defaults(handler=_run)
