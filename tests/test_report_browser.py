"""The HTML report of a real (short) flagship run, opened in headless Chromium.

`make test` installs Debian's ``chromium``; Playwright drives it (never its own browser
download). The report must render offline: every section present and visible, every figure an
embedded image that decodes, no request leaving the file, no console error.
"""

import shutil
from pathlib import Path

import pytest

from browser import CHROMIUM, launch_chromium
from leotwin.analytics.report import REPORT_SECTIONS
from leotwin.flagship import run_flagship


@pytest.fixture(scope="module")
def report_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("flagship-run")
    answer = run_flagship(out, window=("2022-10-05T10:00:00Z", "2022-10-05T10:10:00Z"))
    return Path(answer.report_path)


def test_report_renders_in_chromium(report_path, tmp_path):
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (`make test` installs it)")
    from playwright.sync_api import sync_playwright

    requests, errors = [], []
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report_path.as_uri(), wait_until="load")
            for section in REPORT_SECTIONS:
                heading = page.locator(f"h2#{section}")
                assert heading.count() == 1, f"section {section!r} missing"
                assert heading.is_visible(), f"section {section!r} not visible"
            images = page.evaluate("""() => Array.from(document.images).map(img => ({
                src: img.src.slice(0, 22), w: img.naturalWidth, h: img.naturalHeight}))""")
            assert len(images) >= 2
            for img in images:
                assert img["src"].startswith("data:image/"), img  # embedded, self-contained
                assert img["w"] > 100 and img["h"] > 100, img  # decoded, not a broken icon
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert external == [], f"the report fetched {external}"
    assert errors == []
