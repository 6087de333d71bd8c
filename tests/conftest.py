"""Shared fixtures: the committed demo bundle, loaded once per test session through the users' loaders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from analysis.paths import DEMO_DIR, REPO_ROOT
from tests.tracked_files import changed_paths, snapshot

TRACKED_BEFORE = pytest.StashKey[dict[str, str] | None]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[TRACKED_BEFORE] = snapshot(REPO_ROOT)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Tests never modify tracked files: a session that did fails, naming the files (skipped outside a git checkout)."""
    before = session.config.stash.get(TRACKED_BEFORE, None)
    if before is None:
        return
    changed = changed_paths(before, snapshot(REPO_ROOT) or {})
    if os.environ.get("SAESCOPE_UPDATE_SCREENSHOTS") == "1":  # asked for: the browser test replaces the README's
        changed = [path for path in changed if not path.startswith("docs/screenshots/")]
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"the tests changed tracked files (write under tmp_path instead): {', '.join(changed)}"
        if reporter is not None:
            reporter.write_line(f"\n{message}", red=True)  # after the progress line, which has no newline yet
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _cost_rank(item: pytest.Item) -> int:
    """0 for a browser test (a server and a Chromium), 1 for another slow one, 2 for the rest."""
    if item.get_closest_marker("browser"):
        return 0
    return 1 if item.get_closest_marker("slow") else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whole files, the costliest kind first (the order is the same in every xdist worker). With
    ``--dist loadfile --no-loadscope-reorder`` (pyproject.toml) xdist hands out files in this order,
    so the run ends on short files and both workers finish together; its own reordering, by test
    count, left one worker a minute and more of browser tests after the other had finished."""
    rank: dict[Path, int] = {}
    for item in items:
        rank[item.path] = min(rank.get(item.path, 2), _cost_rank(item))
    items.sort(key=lambda item: rank[item.path])  # stable: a file's tests keep their order


@pytest.fixture(autouse=True, scope="session")
def _user_data_in_a_temporary_folder(tmp_path_factory) -> None:
    """No test writes to the real ~/.local/share/saescope; servers started by tests inherit this."""
    os.environ["SAESCOPE_USER_DB"] = str(tmp_path_factory.mktemp("userdata") / "userdata.duckdb")
    for name in ("SAESCOPE_READ_ONLY", "SAESCOPE_ATLAS_DIR", "GLASSBOX_READ_ONLY", "GLASSBOX_ATLAS_DIR"):
        os.environ.pop(name, None)  # the old names too: a developer's GLASSBOX_READ_ONLY=1 would still apply


@pytest.fixture
def user_db(tmp_path, monkeypatch) -> Path:
    """A fresh, empty user-data file for this test (the dashboard opens it on first use)."""
    path = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(path))
    return path


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO_DIR


@pytest.fixture(scope="session")
def demo_metrics() -> dict:
    return json.loads((DEMO_DIR / "build_metrics.json").read_text())


@pytest.fixture(scope="session")
def demo_model():
    from analysis.model_loading import load_model

    return load_model(str(DEMO_DIR / "model"), device="cpu")


@pytest.fixture(scope="session")
def demo_saes():
    from analysis.sae_loading import load_saes

    return load_saes(str(DEMO_DIR / "saes"))


@pytest.fixture(scope="session")
def heldout_windows(demo_model):
    """The first 16 held-out windows of 128 tokens, each starting with BOS, as the bundle's evaluation uses."""
    from analysis.demo.sae_training import context_windows

    stream = np.load(DEMO_DIR / "heldout_tokens.npy")
    return context_windows(stream, 128, 128, demo_model.model.tokenizer.bos_token_id, seed=1)[:16]


@pytest.fixture(scope="session")
def live(demo_dir):
    """The demo model with every demo SAE and transcoder, as the live pages load it; loaded once per
    session, shared by every test that runs it (none changes it for good)."""
    from analysis.live_model import LiveSpecs, load_live

    return load_live(LiveSpecs(model=str(demo_dir / "model"), saes=(str(demo_dir / "saes"),)), device="cpu")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny random-initialised models of every supported architecture, with SAEs and transcoders
    that fire on them, built on first use (tests/arch_models.py)."""
    from tests.arch_models import TinyModels

    return TinyModels(tmp_path_factory.mktemp("architectures"))


@pytest.fixture
def downloads(monkeypatch):
    """The bytes behind each download button of the last AppTest run, by "<what> (CSV|JSON)" as its
    help says (Streamlit keeps them in its in-memory media store; this keeps a handle on the store
    AppTest creates)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stores: list[MemoryMediaFileStorage] = []
    original = MemoryMediaFileStorage.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        stores.append(self)

    monkeypatch.setattr(MemoryMediaFileStorage, "__init__", keep)

    def read(app) -> dict[str, bytes]:
        return {
            f"{button.proto.help.split(' as ')[0]} ({button.proto.label})": stores[-1]
            .get_file(button.proto.url.rsplit("/", 1)[1])
            .content
            for button in app.get("download_button")
        }

    return read
