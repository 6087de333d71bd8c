"""What a committee member sees at 1400×900 in a real browser (a real `streamlit run` server and
headless Debian Chromium): examples read as text (no token broken across lines, the leading … on
the first token's line), the Home quality table fits without scrolling sideways, icons are
Material icons (no emoji font needed), and the Lists page's download buttons show whole labels."""

from __future__ import annotations

import time

import duckdb
import pytest
from selenium.webdriver.support.ui import WebDriverWait

from analysis.paths import DEMO_DIR, REPO_ROOT
from dashboard.userdata import open_user_store
from tests.browser import chromium, streamlit_server, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Per example line: for each token, how many lines its characters other than leading and trailing
# spaces take (a line may wrap at a token's own leading space, never inside its word), and whether
# the leading … sits on the first token's line.
EXAMPLE_LAYOUT = """
const lines = [...document.querySelectorAll('[data-testid="stHtml"] div')]
  .filter(d => d.style.overflowWrap === 'break-word' && d.getClientRects().length);  // shown, not in a closed expander
return lines.map(line => {
  const spans = [...line.querySelectorAll('span[title]')];
  const pieces = spans.map(span => {
    const node = span.firstChild, text = node ? node.textContent : '';
    const start = text.length - text.trimStart().length, end = text.trimEnd().length;
    if (!node || end <= start || /\\s/.test(text.slice(start, end))) return 1;
    const range = document.createRange();
    range.setStart(node, start);
    range.setEnd(node, end);
    return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
  });
  let ellipsisOnFirstLine = null;
  if (line.firstChild && line.firstChild.nodeType === Node.TEXT_NODE && spans.length) {
    const range = document.createRange();
    range.selectNodeContents(line.firstChild);
    ellipsisOnFirstLine = Math.abs(range.getBoundingClientRect().top - spans[0].getClientRects()[0].top) < 3;
  }
  return {text: line.innerText, pieces: pieces, ellipsisOnFirstLine: ellipsisOnFirstLine,
          lines: new Set(spans.flatMap(s => [...s.getClientRects()].map(r => Math.round(r.top)))).size};
});
"""


def _settle(browser) -> None:
    WebDriverWait(browser, 120).until(
        lambda d: (
            "Running"
            not in d.execute_script(
                "const w = document.querySelector('[data-testid=\"stStatusWidget\"]'); return w ? w.innerText : '';"
            )
        )
    )
    time.sleep(1)


def test_a_committee_reads_examples_tables_and_buttons_at_1400_px(tmp_path, monkeypatch):
    user_db = tmp_path / "userdata.duckdb"
    monkeypatch.setenv("SAESCOPE_USER_DB", str(user_db))
    with duckdb.connect(str(DEMO_DIR / "atlas.duckdb"), read_only=True) as connection:
        sae_hash = connection.execute("SELECT content_hash FROM saes WHERE name = 'resid-L2'").fetchall()[0][0]
    store = open_user_store(user_db)
    store.create_list("bible-candidates-for-the-committee", "carol")
    store.add_to_list("bible-candidates-for-the-committee", sae_hash, "resid-L2", 938, "carol", note="LORD")
    store.close()  # the server opens the file next

    with streamlit_server(REPO_ROOT / "dashboard" / "Home.py", cwd=REPO_ROOT) as url, chromium() as browser:
        browser.set_script_timeout(120)  # the layout script measures every token of the page
        browser.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )
        browser.get(url)
        wait_for_text(browser, "SAEs and transcoders", timeout=90)
        _settle(browser)
        widths = WebDriverWait(browser, 60).until(  # the grids draw after the page's text
            lambda d: (
                (
                    found := d.execute_script(
                        "return [...document.querySelectorAll('[data-testid=\"stDataFrame\"] .dvn-scroller')]"
                        ".map(s => [s.scrollWidth, s.clientWidth]);"
                    )
                )
                and len(found) == 3
                and found
            )
        )
        assert len(widths) == 3  # documents per domain, SAE quality, SAE hooks
        assert all(scrolled <= shown + 1 for scrolled, shown in widths), f"a table scrolls sideways: {widths}"
        icons = browser.execute_script(
            'return [...document.querySelectorAll(\'[data-testid="stPageLink"] [data-testid="stIconMaterial"]\')]'
            ".map(i => i.innerText);"
        )
        assert icons == ["search"]

        browser.get(f"{url}/Feature?atlas=demo&sae=resid-L2&latent=938")
        wait_for_text(browser, "Top 20 examples", timeout=90)
        _settle(browser)
        lines = WebDriverWait(browser, 30).until(lambda d: d.execute_script(EXAMPLE_LAYOUT))
        assert len(lines) >= 20
        for line in lines:
            assert "·" not in line["text"] and " the" in " ".join(x["text"] for x in lines)
            assert all(count == 1 for count in line["pieces"]), line  # no token broken across lines
            if line["text"].startswith("…"):
                assert line["ellipsisOnFirstLine"], line
        assert any(line["lines"] > 1 for line in lines)  # the check above saw lines that wrap

        browser.get(f"{url}/Lists?atlas=demo")
        wait_for_text(browser, "Exports", timeout=90)
        _settle(browser)
        buttons = browser.execute_script(
            "return [...document.querySelectorAll('[data-testid=\"stDownloadButton\"] button')]"
            ".filter(b => b.offsetWidth > 0).map(b => "
            "[b.innerText.trim(), b.scrollWidth <= b.clientWidth, !!b.querySelector('[data-testid=\"stIconMaterial\"]')]);"
        )
        assert [text.split()[-1] for text, _, _ in buttons] == ["CSV", "JSON"] * 3, buttons
        assert all(whole and icon for _, whole, icon in buttons), buttons  # an icon, and no label cut short
