"""Helpers for driving dashboard pages with Streamlit's AppTest (the app's own scripts, run in-process)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
from streamlit.testing.v1 import AppTest

from analysis.paths import DEMO_DIR, REPO_ROOT
from dashboard.userdata import open_user_store
from tests.atlas_rows import one_row

HOME = str(REPO_ROOT / "dashboard" / "Home.py")
HOSTILE_TOKEN = "<img src=x onerror=alert(1)>"
HOSTILE_TOKEN_2 = '"&\u202e\x07</div><script>alert(2)</script>'
HOSTILE_LABEL = "<script>alert('label')</script> & \" **bold** [x](javascript:alert(3))"


PASSWORD = "correct horse battery"


def page(path: str | None = None, user: str | None = None, role: str = "reviewer", **query: str | list[str]) -> AppTest:
    """A dashboard page (Home when ``path`` is None) with a query string, run once; with ``user``,
    signed in as that user (an account with ``role`` in the test's user-data file), as a user does."""
    app = AppTest.from_file(HOME, default_timeout=60)
    if path:
        app.switch_page(path)
    for key, value in query.items():
        app.query_params[key] = value
    if not user:
        return app.run()
    ensure_account(user, role)
    return sign_in(app.run(), user)


def ensure_account(name: str, role: str = "reviewer", password: str = PASSWORD) -> None:
    """An account in the user-data file the dashboard uses (SAESCOPE_USER_DB), with this role."""
    store = open_user_store(os.environ["SAESCOPE_USER_DB"])
    account = store.account(name)
    if account is None:
        store.add_account(name, role, password, "test-setup")
    elif account.role != role:
        store.set_role(name, role, "test-setup")


def sign_in(app: AppTest, name: str, password: str = PASSWORD) -> AppTest:
    """Fill and submit the sign-in form the page shows."""
    by_label(app.text_input, "User name").set_value(name)
    by_label(app.text_input, "Password").set_value(password)
    by_label(app.button, "Sign in").click()
    return app.run(timeout=180)  # signing in reruns the page, which may then compute (a graph, a model load)


def by_label(widgets, label: str):
    """The one widget with this label."""
    matches = [w for w in widgets if w.label == label]
    assert len(matches) == 1, f"{len(matches)} widgets labelled {label!r}: {[w.label for w in widgets]}"
    return matches[0]


def html_bodies(app: AppTest) -> str:
    return "\n".join(element.proto.body for element in app.get("html"))


def make_hostile_atlas(folder: Path, sae: int = 0, latent: int = 17) -> Path:
    """A copy of the demo atlas whose tokens at the feature's top example, and its label, are hostile text."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hostile.duckdb"
    shutil.copy(DEMO_DIR / "atlas.duckdb", path)
    connection = duckdb.connect(str(path))
    try:
        window, position = one_row(
            connection,
            "SELECT window_id, position FROM examples WHERE sae = ? AND latent = ? AND kind = 'top' AND rank = 0",
            [sae, latent],
        )
        tokens = one_row(connection, "SELECT tokens FROM windows WHERE window_id = ?", [window])[0]
        connection.execute("UPDATE tokens SET text = ? WHERE token = ?", [HOSTILE_TOKEN, tokens[position]])
        connection.execute("UPDATE tokens SET text = ? WHERE token = ?", [HOSTILE_TOKEN_2, tokens[position - 1]])
        connection.execute("UPDATE features SET label = ? WHERE sae = ? AND latent = ?", [HOSTILE_LABEL, sae, latent])
    finally:
        connection.close()
    return path


def make_atlas_of_model(folder: Path, name: str, model_spec: str) -> Path:
    """A copy of the demo atlas that names another model (as when an atlas is shared without its
    model, or the model on disk is broken): browsing works, the live pages must say why they cannot run."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.duckdb"
    shutil.copy(DEMO_DIR / "atlas.duckdb", path)
    connection = duckdb.connect(str(path))
    try:
        connection.execute(
            """UPDATE meta SET value = json_object('spec', ?, 'architecture', 'GPT2LMHeadModel',
                              'content_hash', value->>'content_hash') WHERE key = 'model'""",
            [model_spec],
        )
    finally:
        connection.close()
    return path


def make_atlas_of_saes(folder: Path, name: str, keep: list[str]) -> Path:
    """A copy of the demo atlas whose ``meta.saes`` lists only the SAEs named in ``keep`` (an atlas
    built from other SAEs, e.g. without a transcoder at every layer)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.duckdb"
    shutil.copy(DEMO_DIR / "atlas.duckdb", path)
    connection = duckdb.connect(str(path))
    try:
        saes = json.loads(one_row(connection, "SELECT value FROM meta WHERE key = 'saes'")[0])
        kept = [info for info in saes if info["name"] in keep]
        connection.execute("UPDATE meta SET value = ? WHERE key = 'saes'", [json.dumps(kept)])
    finally:
        connection.close()
    return path
