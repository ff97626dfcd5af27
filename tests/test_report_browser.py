"""The report in a real browser (issue 23 item 3): a generated report opened in headless Chromium (Debian's
`chromium`, installed by scripts/setup.sh --test) and driven by Playwright (the test extra). No console errors,
every image loads and is drawn at twice the size it is shown, and the page is no wider than a 1,280 px window,
with host facts of a real machine (the collector's) and a long command line among them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright import sync_api  # the test extra; chromium comes from scripts/setup.sh --test: neither is ever skipped

from runner.analysis import build_report
from runner.provision.fingerprint import collect_local
from tests.report_study import study

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run"]
WINDOW = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    metrics, trials, prov = study()
    prov["hosts"]["thismachine"] = collect_local()  # the real collector's nested facts beside the synthetic host
    return build_report(metrics, trials, prov, tmp_path_factory.mktemp("report"), bootstrap=20)


def test_report_in_chromium(report: Path) -> None:
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: scripts/setup.sh --test installs Debian's chromium"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport=WINDOW)
            errors: list[str] = []
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate("""() => Array.from(document.images).map(i => ({src: i.getAttribute('src'),
                complete: i.complete, natural: i.naturalWidth, shown: i.clientWidth}))""")
            width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            page.screenshot(path=str(report.parent / "screenshot.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) >= 5 and {i["src"] for i in images} >= {"img/finding_env.png", "img/finding_kernel.png",
                                                                 "img/finding_overcommit.png"}
    for img in images:
        assert img["complete"] and img["natural"] > 0, img
        assert img["natural"] >= 2 * img["shown"] > 0, img  # drawn at 2x: sharp, legends legible when zoomed
    assert width[1] == WINDOW["width"] and width[0] <= width[1], f"page {width[0]} px wide in a {width[1]} px window"
