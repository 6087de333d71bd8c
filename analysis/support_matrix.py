"""The README's support matrix (architecture x capability), written from a test run's results.

tests/test_architectures.py records which (architecture, capability) cells ran and which passed;
with ``SAESCOPE_SUPPORT_MATRIX_OUT=results.json`` it writes them to that file, and

    python -m analysis.support_matrix results.json --write docs/support_matrix.md README.md

renders the table into each file (a whole .md file of its own, or between README's
``<!-- support matrix -->`` markers). The same test module checks that the committed table says
"yes" exactly for the cells that passed in the run, so a hand edit or a regression fails CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

START, END = "<!-- support matrix -->\n", "<!-- end support matrix -->"


def render(results: dict) -> str:
    """The Markdown table: one row per architecture, "yes" where the cell's test passed."""
    capabilities, architectures = results["capabilities"], results["architectures"]
    passed = {tuple(cell) for cell in results["passed"]}
    header = "| architecture | " + " | ".join(capabilities) + " |\n"
    rule = "|---" * (len(capabilities) + 1) + "|\n"
    rows = "".join(
        f"| {name} (`{class_name}`) | "
        + " | ".join("yes" if (name, capability) in passed else "no" for capability in capabilities)
        + " |\n"
        for name, class_name in architectures.items()
    )
    return header + rule + rows


def embedded(text: str) -> str:
    """The table inside a file: all of a table file, or what README holds between the markers."""
    if START not in text:
        return text
    return text.split(START, 1)[1].split(END, 1)[0]


def cells(table: str) -> dict[tuple[str, str], bool]:
    """A rendered table read back: (architecture, capability) -> yes."""
    lines = [line.strip().strip("|").split("|") for line in table.strip().splitlines()]
    capabilities = [cell.strip() for cell in lines[0][1:]]
    return {
        (row[0].strip().split(" (")[0], capability): value.strip() == "yes"
        for row in lines[2:]
        for capability, value in zip(capabilities, row[1:])
    }


def write(table: str, path: Path) -> None:
    text = path.read_text() if path.exists() else ""
    if START in text:
        before, rest = text.split(START, 1)
        text = before + START + table + END + rest.split(END, 1)[1]
    else:
        text = table
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.support_matrix", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("results", type=Path, help="the JSON a test run wrote (SAESCOPE_SUPPORT_MATRIX_OUT)")
    parser.add_argument("--write", type=Path, nargs="+", required=True, help="files to write the table into")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        table = render(results)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {args.results} is not a support-matrix results file ({error})", file=sys.stderr)
        return 2
    for path in args.write:
        write(table, path)
    print(f"support matrix of {len(results['architectures'])} architectures -> {', '.join(map(str, args.write))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
