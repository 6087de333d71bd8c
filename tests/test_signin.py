"""Sign-in, roles, per-atlas access and edit conflicts, the way users meet them: the admin command
as a subprocess, every page through Streamlit's AppTest on the demo atlas, a real user-data file.

OpenID Connect is not exercised here (no identity provider can be reached offline): what is tested
is that an ``[auth]`` section counts as sign-in configured; ``st.login``'s round trip is not."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import duckdb
import pytest
from streamlit import config as streamlit_config

from analysis.paths import DEMO_DIR, REPO_ROOT
from dashboard.shell.identity import AccessDenied, ActingStore, Identity
from dashboard.userdata import open_user_store
from tests.dashboard_app import PASSWORD, by_label, ensure_account, page, sign_in

FEATURES, FEATURE, TRIAGE, LISTS = "pages/1_Features.py", "pages/2_Feature.py", "pages/3_Triage.py", "pages/4_Lists.py"
STEER, SEARCH, GRAPH = "pages/5_Steer.py", "pages/6_Search_by_text.py", "pages/7_Graph.py"


def saescope(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args], input=stdin, capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )


def sae_hash(name: str = "resid-L2") -> str:
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as atlas:
        (content_hash,) = atlas.execute("SELECT content_hash FROM saes WHERE name = ?", [name]).fetchone() or ("",)
    return content_hash


# --- the admin command -------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess imports torch (the CLI's error classes)
def test_the_users_command_manages_accounts_with_salted_scrypt_hashes_and_audits_every_change(user_db, capsys):
    db = ["users", "--user-db", str(user_db)]
    added = saescope(*db, "add", "alice", "--role", "admin", "--password-stdin", stdin="first password\n")
    assert added.returncode == 0 and added.stdout.startswith("added alice (admin)"), added.stderr
    # the other actions in-process (the same argparse and handler; a subprocess costs a torch import each)
    capsys.readouterr()
    assert cli([*db, "add", "\u202eecila", "--password-stdin"], "long enough pw\n") == 2
    bidi = capsys.readouterr().err
    assert "not a valid user name" in bidi and bidi.count("\n") == 1, bidi
    for argv, stdin in (
        (["add", "bob", "--password-stdin"], "first password\n"),
        (["role", "bob", "viewer"], ""),
        (["reset", "bob", "--password-stdin"], "second password\n"),
        (["grant", "demo", "role:reviewer"], ""),
        (["revoke", "demo", "role:reviewer"], ""),
        (["remove", "alice"], ""),
    ):
        assert cli(db + argv, stdin) == 0
    capsys.readouterr()
    assert cli([*db, "list"]) == 0 and capsys.readouterr().out == "bob\tviewer\n"
    for argv, stdin, message in (
        (["add", "carol", "--password-stdin"], "short\n", "8 to 1024 characters"),
        (["role", "nobody", "admin"], "", "no user named 'nobody'"),
        (["add", "bob", "--password-stdin"], "long enough pw\n", "already a user named 'bob'"),
    ):
        assert cli(db + argv, stdin) == 2 and message in capsys.readouterr().err
    store = open_user_store(user_db)
    try:
        hashes = store.connection.execute(f"SELECT name, password_hash FROM {store.table('accounts')}").fetchall()
        assert [name for name, _ in hashes] == ["bob"] and hashes[0][1].startswith("scrypt$16384$8$1$")
        assert store.authenticate("bob", "second password") and not store.authenticate("bob", "first password")
        audit = store.audit_frame()
        assert list(audit["action"]) == [
            "user_add", "user_add", "user_role", "user_reset", "atlas_grant", "atlas_revoke", "user_remove"
        ]  # fmt: skip
        assert audit["reviewer"].str.startswith("cli:").all()
        assert not audit["new_value"].fillna("").str.contains("password|scrypt").any()
    finally:
        store.close()


def cli(argv: list[str], stdin: str = "") -> int:
    import io

    from analysis.cli import main

    saved, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        return main(argv)
    finally:
        sys.stdin = saved


def test_two_accounts_with_one_password_get_different_salts(user_db):
    store = open_user_store(user_db)
    store.add_account("a1", "viewer", "same password", "t")
    store.add_account("a2", "viewer", "same password", "t")
    first, second = (
        row[0] for row in store.connection.execute(f"SELECT password_hash FROM {store.table('accounts')}").fetchall()
    )
    assert first.split("$")[4] != second.split("$")[4] and first.split("$")[5] != second.split("$")[5]


# --- signing in --------------------------------------------------------------------------------


def test_with_accounts_every_page_asks_for_sign_in_and_shows_nothing_before(user_db):
    ensure_account("alice")
    for path in (None, FEATURES, FEATURE, TRIAGE, LISTS, GRAPH):
        app = page(path, sae="resid-L2", latent="3")
        assert not app.exception
        assert [t.value for t in app.title] == ["Sign in to SAEscope"]
        assert not app.dataframe and not app.get("html") and not app.get("plotly_chart")


def test_failed_sign_ins_are_refused_audited_and_rate_limited(user_db):
    ensure_account("alice")
    app = page(FEATURES)
    for _ in range(5):
        sign_in(app, "alice", "wrong password")
        assert [e.value for e in app.error] == ["Wrong user name or password."]
    sign_in(app, "alice", PASSWORD)  # the right password, but too late
    assert any("Too many failed sign-ins" in e.value for e in app.error)
    assert [t.value for t in app.title] == ["Sign in to SAEscope"]
    refusals = open_user_store(user_db).audit_frame().query("action == 'signin_refused'")
    assert len(refusals) == 6 and set(refusals["reviewer"]) == {"alice"}
    other = page(FEATURES, user="bob")  # another name is not locked out
    assert [t.value for t in other.title] == ["Features"]


def test_a_sign_in_expires(user_db, monkeypatch):
    monkeypatch.setenv("SAESCOPE_SESSION_MINUTES", "0.01")  # 0.6 s
    app = page(FEATURES, user="alice")
    assert [t.value for t in app.title] == ["Features"]
    time.sleep(1.0)
    app.run()
    assert any("Your sign-in expired" in w.value for w in app.warning)
    assert [t.value for t in app.title] == ["Sign in to SAEscope"]


def test_a_proxy_header_is_trusted_only_when_turned_on_and_required_then(user_db, monkeypatch):
    monkeypatch.setenv("SAESCOPE_AUTH_HEADER", "X-Forwarded-User")
    app = page(FEATURES)  # AppTest sends no headers: as a request that bypassed the proxy
    assert any("X-Forwarded-User header" in e.value and "has none" in e.value for e in app.error)
    assert not app.dataframe


# --- roles ---------------------------------------------------------------------------------------


@pytest.mark.model  # the live pages load the demo model
def test_a_viewer_browses_every_page_and_cannot_write_anything(user_db):
    store = open_user_store(user_db)
    store.create_list("shortlist", "setup")
    pages = {
        None: {},
        FEATURES: {},
        FEATURE: {"sae": "resid-L2", "latent": "17"},
        TRIAGE: {"sae": "transcoder-L0"},
        LISTS: {"list": "shortlist"},
        STEER: {"steer": "transcoder-L3:5:40"},
        SEARCH: {"text": "And the LORD spake"},
        GRAPH: {},
    }
    for path, query in pages.items():
        app = page(path, user="victor", role="viewer", **query)
        assert not app.exception and not app.error, (path, app.exception, [e.value for e in app.error])
        assert any("Signed in as victor · viewer" in t.value for t in app.text)
        enabled_writes = [
            b.label
            for b in app.button
            if b.label
            in ("Save", "Save and next", "Undo my last change", "Add to list", "Create list", "Delete", "Save graph")
            and not b.disabled
        ]
        assert not enabled_writes, (path, enabled_writes)
    # Behind the disabled forms, the store itself refuses a viewer's writes (a crafted request
    # cannot click a disabled widget in AppTest, so the page's writer is driven directly).
    acting = ActingStore(store, Identity("victor", "viewer", "account"))
    for write in (
        lambda: acting.annotate(sae_hash(), "resid-L2", 3, expected=None, label="x"),
        lambda: acting.create_list("mine"),
        lambda: acting.add_tag("new-tag"),
        lambda: acting.record_experiment("graph", "t", "m", {}),
    ):
        with pytest.raises(AccessDenied, match="a viewer cannot"):
            write()
    assert store.annotation(sae_hash(), 17).label == "" and list(store.lists()["name"]) == ["shortlist"]
    refused = store.audit_frame().query("action == 'write_refused'")
    assert len(refused) == 4 and set(refused["reviewer"]) == {"victor"}


def test_only_an_admin_deletes_another_users_experiment(user_db):
    store = open_user_store(user_db)
    kept = store.record_experiment("graph", "dana", "dana's", "m", {"graph": {}})
    with pytest.raises(AccessDenied, match="needs the admin role"):
        ActingStore(store, Identity("erin", "reviewer", "account")).delete_experiment(kept)
    assert ActingStore(store, Identity("root", "admin", "account")).delete_experiment(kept)


def test_an_atlas_restricted_to_a_user_is_hidden_from_others_and_refused_by_url(user_db, tmp_path, monkeypatch):
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    shutil.copy(DEMO_DIR / "atlas.duckdb", atlases / "secret.duckdb")
    monkeypatch.setenv("SAESCOPE_ATLAS_DIR", str(atlases))
    store = open_user_store(user_db)
    store.grant_atlas("secret", "alice", "admin-setup")
    bob = page(FEATURES, user="bob", atlas="secret")
    assert by_label(bob.selectbox, "Atlas").options == ["demo (atlas.duckdb)"]
    assert any("Unknown atlas 'secret' (or one you may not open)" in e.value for e in bob.error)
    assert bob.query_params.get("atlas") != "secret" or by_label(bob.selectbox, "Atlas").value == "demo"
    alice = page(FEATURES, user="alice", atlas="secret")
    assert not alice.error and by_label(alice.selectbox, "Atlas").value == "secret"
    admin = page(FEATURES, user="ada", role="admin")
    assert "secret (secret.duckdb)" in by_label(admin.selectbox, "Atlas").options
    assert list(store.audit_frame().query("action == 'atlas_grant'")["new_value"]) == ["user:alice"]


# --- serving on a network --------------------------------------------------------------------------


@pytest.mark.slow  # a subprocess imports torch
def test_a_network_address_without_sign_in_is_refused_by_the_command_and_the_app(user_db):
    result = saescope("dashboard", "--server.address", "0.0.0.0")
    assert result.returncode == 2 and "refuses to serve on address 0.0.0.0 without sign-in" in result.stderr
    streamlit_config.set_option("server.address", "0.0.0.0")
    try:
        app = page(FEATURES)
        assert any("refuses to serve on address 0.0.0.0" in e.value for e in app.error) and not app.dataframe
        ensure_account("alice")  # sign-in configured: the same address is served, after sign-in
        assert [t.value for t in page(FEATURES, user="alice").title] == ["Features"]
    finally:
        streamlit_config.set_option("server.address", "127.0.0.1")


def test_an_oidc_section_counts_as_sign_in_configured(tmp_path):
    from dashboard.shell.exposure import oidc_configured

    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\nredirect_uri = "http://localhost:8501/oauth2callback"\ncookie_secret = "x"\n')
    assert oidc_configured([tmp_path / "missing.toml", secrets])
    secrets.write_text('[other]\nkey = "x"\n')
    assert not oidc_configured([secrets])


# --- no silent loss ------------------------------------------------------------------------------


def test_a_save_against_a_feature_changed_since_shows_who_changed_what_and_keeps_the_typed_values(user_db):
    alice = page(FEATURE, user="alice", sae="resid-L2", latent="5")
    bob = page(FEATURE, user="bob", sae="resid-L2", latent="5")
    by_label(bob.text_input, "Label").set_value("bob's label")
    by_label(bob.button, "Save").click().run()
    by_label(alice.text_input, "Label").set_value("alice's label")
    by_label(alice.text_area, "Notes").set_value("alice's notes")
    by_label(alice.button, "Save").click().run()
    store = open_user_store(user_db)
    assert store.annotation(sae_hash(), 5).label == "bob's label"
    [warning] = [w.value for w in alice.warning]
    assert "Not saved yet" in warning and "Your values are still in the form" in warning
    assert any("bob changed this feature (label)" in t.value for t in alice.text)
    assert by_label(alice.text_input, "Label").value == "alice's label"
    assert by_label(alice.text_area, "Notes").value == "alice's notes"
    changes = next(d.value for d in alice.dataframe if "field" in d.value.columns)  # the conflict's table
    assert list(changes[["reviewer", "field", "old_value", "new_value"]].itertuples(index=False)) == [
        ("bob", "label", "", "bob's label")
    ]
    by_label(alice.button, "Overwrite with mine").click().run()
    assert (store.annotation(sae_hash(), 5).label, store.annotation(sae_hash(), 5).notes) == (
        "alice's label",
        "alice's notes",
    )
    edits = store.history(sae_hash(), 5).query("action == 'edit'")
    assert sorted(set(edits["reviewer"])) == ["alice", "bob"]

    by_label(bob.text_input, "Label").set_value("bob again")
    by_label(bob.button, "Save").click().run()
    assert any("alice changed this feature" in t.value for t in bob.text)
    by_label(bob.button, "Keep theirs").click().run()
    assert by_label(bob.text_input, "Label").value == "alice's label" and not bob.warning
    assert store.annotation(sae_hash(), 5).label == "alice's label"


def test_undo_undoes_only_your_own_edits(user_db):
    alice = page(FEATURE, user="alice", sae="resid-L2", latent="6")
    by_label(alice.text_input, "Label").set_value("alice's")
    by_label(alice.button, "Save").click().run()
    bob = page(FEATURE, user="bob", sae="resid-L2", latent="6")
    by_label(bob.button, "Undo my last change").click().run()
    assert open_user_store(user_db).annotation(sae_hash(), 6).label == "alice's"
    assert not open_user_store(user_db).history(sae_hash(), 6).query("action == 'undo'").shape[0]
