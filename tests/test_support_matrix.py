"""``python -m analysis.support_matrix`` as the README says to run it: a test run's results JSON
rendered into (copies of) docs/support_matrix.md and README.md, nothing else in them changed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from analysis.paths import REPO_ROOT
from analysis.support_matrix import END, START, cells, embedded


def test_the_script_writes_a_runs_cells_into_the_table_file_and_between_readmes_markers(tmp_path):
    committed = cells((REPO_ROOT / "docs" / "support_matrix.md").read_text())
    architectures = {}
    for line in (REPO_ROOT / "docs" / "support_matrix.md").read_text().splitlines()[2:]:
        name, class_name = line.split("|")[1].strip().rstrip(")").split(" (")
        architectures[name] = class_name.strip("`")
    capabilities = list(dict.fromkeys(capability for _, capability in committed))
    failed = (next(iter(architectures)), capabilities[-1])
    passed = [cell for cell, yes in committed.items() if yes and cell != failed]
    results = {"capabilities": capabilities, "architectures": architectures, "ran": [], "passed": passed}
    (tmp_path / "results.json").write_text(json.dumps(results))
    shutil.copy(REPO_ROOT / "README.md", tmp_path / "README.md")
    script = [sys.executable, "-m", "analysis.support_matrix", str(tmp_path / "results.json"), "--write"]
    result = subprocess.run(
        [*script, str(tmp_path / "matrix.md"), str(tmp_path / "README.md")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "matrix.md").read_text()
    assert cells(table) == {cell: cell in passed for cell in committed} and not cells(table)[failed]
    readme, original = (tmp_path / "README.md").read_text(), (REPO_ROOT / "README.md").read_text()
    assert embedded(readme) == table
    assert readme.split(START)[0] == original.split(START)[0] and readme.split(END)[1] == original.split(END)[1]
    (tmp_path / "not-results.json").write_text("{}")
    broken = subprocess.run(
        [*script[:3], str(tmp_path / "not-results.json"), "--write", str(tmp_path / "x.md")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and broken.stderr.startswith("error: ")
    assert not (tmp_path / "x.md").exists()
