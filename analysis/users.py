"""``saescope users``: the admin command for local accounts and per-atlas access in the user-data file.

Torch-free (it imports only the user store and the dashboard's settings), so it starts fast.
DuckDB lets one process hold the file read-write: run it while the dashboard is stopped, or point
it at the same file with ``--user-db`` from the server's machine between sessions.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

ROLES = ("viewer", "reviewer", "admin")  # dashboard.userdata.ROLES, repeated so --help needs no import


def _password(args: argparse.Namespace) -> str:
    """The new password: one line from stdin with --password-stdin, else asked twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to ask for the password: pass it on stdin with --password-stdin")
    first = getpass.getpass(f"New password for {args.name}: ")
    if first != getpass.getpass("Again: "):
        raise ValueError("the two passwords differ; nothing was changed")
    return first


def _run(args: argparse.Namespace) -> int:
    from dashboard.shell.settings import load_settings
    from dashboard.userdata import open_user_store

    path = Path(args.user_db) if args.user_db else load_settings().user_db
    admin = f"cli:{getpass.getuser()}"  # who the audit log records for changes made here
    store = open_user_store(path)
    try:
        if args.action == "add":
            account = store.add_account(args.name, args.role, _password(args), admin)
            print(f"added {account.name} ({account.role}) to {path}")
        elif args.action == "remove":
            store.remove_account(args.name, admin)
            print(f"removed {args.name} from {path}")
        elif args.action == "role":
            account = store.set_role(args.name, args.role, admin)
            print(f"{account.name} is now {account.role}")
        elif args.action == "reset":
            store.reset_password(args.name, _password(args), admin)
            print(f"new password set for {args.name}")
        elif args.action == "list":
            accounts = store.accounts()
            for name, role in zip(accounts["name"], accounts["role"]):
                print(f"{name}\t{role}")
            for atlas, principals in sorted(store.atlas_grants().items()):
                print(f"atlas {atlas}: only {', '.join(sorted(principals))}")
        elif args.action in ("grant", "revoke"):
            change = store.grant_atlas if args.action == "grant" else store.revoke_atlas
            done = change(args.atlas, args.who, admin)
            past = {"grant": "granted", "revoke": "revoked"}[args.action]
            print(f"{past} {args.who} on atlas {args.atlas}" if done else "nothing to change: it was so already")
    finally:
        store.close()
    return 0


def add_users_command(commands: argparse._SubParsersAction) -> None:
    """Register ``users`` with its actions on the CLI's subcommands."""
    users = commands.add_parser(
        "users",
        help="manage the dashboard's local accounts and who may open which atlas",
        description="Local accounts (salted scrypt hashes) and per-atlas access, in the user-data file "
        "(SAESCOPE_USER_DB). Every change is in the audit log. See docs/SECURITY.md.",
    )
    users.add_argument("--user-db", help="the user-data file (default: the dashboard's, SAESCOPE_USER_DB)")
    actions = users.add_subparsers(dest="action", required=True, metavar="<action>")
    add = actions.add_parser("add", help="add a user with a role and a password")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, default="reviewer")
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    role = actions.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    reset = actions.add_parser("reset", help="set a new password for a user")
    reset.add_argument("name")
    for parser in (add, reset):
        parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    actions.add_parser("list", help="list users and restricted atlases")
    for action, text in (
        ("grant", "open an atlas to a user or role (restricts it to its grantees)"),
        ("revoke", "take a grant back"),
    ):
        grant = actions.add_parser(action, help=text)
        grant.add_argument(
            "atlas", help="the atlas's key in the dashboard's URL (demo, or the file name without .duckdb)"
        )
        grant.add_argument("who", help="a user name, or role:viewer / role:reviewer / role:admin")
    users.set_defaults(handler=_run)
