"""Dashboard settings after the rename from Glassbox: the old ``GLASSBOX_*`` variables, the old
``.streamlit/glassbox.toml`` and the old user-data file are still read for one release, each with a
one-line notice that a page shows; the new names win wherever both are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.shell.settings import SettingsError, load_settings
from tests.dashboard_app import page


def settings_in(folder: Path, environ: dict[str, str]):
    """``load_settings`` with every file it reads inside ``folder``, as a checkout and a home there would have them."""
    return load_settings(
        environ,
        settings_file=folder / "saescope.toml",
        old_settings_file=folder / "glassbox.toml",
        default_user_db=folder / "share" / "saescope" / "userdata.duckdb",
        old_default_user_db=folder / "share" / "glassbox" / "userdata.duckdb",
    )


def test_nothing_set_gives_the_defaults_and_no_notice(tmp_path):
    settings = settings_in(tmp_path, {})
    assert settings.read_only is False and settings.atlas_dir is None
    assert settings.user_db == tmp_path / "share" / "saescope" / "userdata.duckdb"
    assert settings.notices == ()


@pytest.mark.parametrize("name, value", [("READ_ONLY", "1"), ("ATLAS_DIR", "/old/atlases"), ("USER_DB", "/old/u.db")])
def test_an_old_variable_is_read_with_a_notice_naming_the_new_one(tmp_path, name, value):
    settings = settings_in(tmp_path, {f"GLASSBOX_{name}": value})
    read = {"READ_ONLY": settings.read_only, "ATLAS_DIR": settings.atlas_dir, "USER_DB": settings.user_db}[name]
    assert read == (True if name == "READ_ONLY" else Path(value))
    assert settings.notices == (
        f"GLASSBOX_{name} is the old name of SAESCOPE_{name}; it is read for one more release.",
    )


def test_the_new_variables_win_over_the_old_ones_without_a_notice(tmp_path):
    environ = {
        "SAESCOPE_READ_ONLY": "0",
        "GLASSBOX_READ_ONLY": "1",
        "SAESCOPE_ATLAS_DIR": "/new/atlases",
        "GLASSBOX_ATLAS_DIR": "/old/atlases",
        "SAESCOPE_USER_DB": "/new/u.db",
        "GLASSBOX_USER_DB": "/old/u.db",
    }
    settings = settings_in(tmp_path, environ)
    assert (settings.read_only, settings.atlas_dir, settings.user_db) == (
        False,
        Path("/new/atlases"),
        Path("/new/u.db"),
    )
    assert settings.notices == ()


def test_the_old_settings_file_is_read_with_a_notice_and_the_new_one_wins(tmp_path):
    (tmp_path / "glassbox.toml").write_text('atlas_dir = "/old/atlases"\nread_only = true\n')
    settings = settings_in(tmp_path, {})
    assert settings.atlas_dir == Path("/old/atlases") and settings.read_only is True
    assert settings.notices == (
        f"{tmp_path / 'glassbox.toml'} is read as saescope.toml (its old name) for one more release.",
    )

    (tmp_path / "saescope.toml").write_text('atlas_dir = "/new/atlases"\n')
    settings = settings_in(tmp_path, {})
    assert settings.atlas_dir == Path("/new/atlases") and settings.read_only is False
    assert settings.notices == ()


def test_the_old_user_data_file_is_used_where_it_is_until_one_exists_at_the_new_place(tmp_path):
    old = tmp_path / "share" / "glassbox" / "userdata.duckdb"
    new = tmp_path / "share" / "saescope" / "userdata.duckdb"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the user's labels")
    settings = settings_in(tmp_path, {})
    assert settings.user_db == old
    assert settings.notices == (
        f"Using the user data at {old} (SAEscope's old name); move it to {new} to silence this notice.",
    )
    assert old.read_bytes() == b"the user's labels" and not new.exists()  # read in place, never moved

    assert settings_in(tmp_path, {"SAESCOPE_USER_DB": "/chosen/u.db"}).user_db == Path("/chosen/u.db")
    new.parent.mkdir(parents=True)
    new.write_bytes(b"")
    settings = settings_in(tmp_path, {})
    assert settings.user_db == new and settings.notices == ()


def test_an_unreadable_settings_file_is_one_clear_error(tmp_path):
    (tmp_path / "saescope.toml").write_text("atlas_dir = \n")
    with pytest.raises(SettingsError, match="could not read the dashboard settings in"):
        settings_in(tmp_path, {})


def test_a_page_shows_the_notice(user_db, monkeypatch):
    monkeypatch.setenv("GLASSBOX_READ_ONLY", "0")
    app = page("pages/4_Lists.py")
    assert not app.exception
    notice = "GLASSBOX_READ_ONLY is the old name of SAESCOPE_READ_ONLY; it is read for one more release."
    assert notice in [caption.value for caption in app.caption]
