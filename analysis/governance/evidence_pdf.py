"""The report printed to PDF by headless Chromium (Debian's ``chromium``): the same HTML, so the PDF and
the page a reader opens say the same thing. Chromium prints a page it loaded from a local file with
nothing to fetch; it runs with a throwaway profile so concurrent prints do not share one."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from analysis.governance.evidence_data import EvidenceError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MISSING = (
    "no Chromium to print the PDF with: install it (Debian: apt install chromium), set SAESCOPE_CHROMIUM to "
    "its path, or pass --no-pdf for a pack with the HTML report only"
)


def find_chromium() -> str | None:
    """SAESCOPE_CHROMIUM when set, else the first Chromium on PATH."""
    given = os.environ.get("SAESCOPE_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def print_pdf(html: str, chromium: str, timeout: float = 120) -> bytes:
    """``html`` as PDF bytes; EvidenceError (one line) when Chromium fails or prints nothing."""
    with tempfile.TemporaryDirectory(prefix="saescope-pdf-") as folder:
        page, pdf = Path(folder) / "report.html", Path(folder) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-pdf-header-footer",
            f"--user-data-dir={Path(folder) / 'profile'}",
            f"--print-to-pdf={pdf}",
            page.as_uri(),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EvidenceError(f"Chromium could not print the report ({chromium}): {error}") from None
        content = pdf.read_bytes() if pdf.is_file() else b""
        if not content.startswith(b"%PDF"):
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise EvidenceError(f"Chromium printed no PDF (exit {result.returncode}): {last}")
        return content
