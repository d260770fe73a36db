"""The "No data" page in headless Chromium: it opens from a link in both languages without
exceptions; a data-free run started from the page draws the images as they form (screenshot
mid-synthesis in artifacts/screenshots/), and Stop ends it keeping what was done."""

from __future__ import annotations

import re
import time

import pytest
from test_browser import SHOTS, _no_exception, _open, _scroll_to

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.parametrize("lang,title", [("en", "No labels, no data"), ("zh", "无标签，无数据")])
def test_no_data_page_opens_from_a_link(server, browser, lang, title):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/no-data?dataset=digits&bn=0.3" + ("&lang=zh" if lang == "zh" else ""))
    _no_exception(page)
    assert page.get_by_role("heading", name=title).count() >= 1
    assert "bn=0.3" in page.url  # the controls stay in the address bar
    page.close()


def _synthesis_step(page) -> int:
    text = (
        page.locator("[data-testid='stProgress']").first.inner_text()
        if page.locator("[data-testid='stProgress']").count()
        else ""
    )
    m = re.search(r"Synthesis \(the teacher dreams\): step (\d+)", text)
    return int(m.group(1)) if m else 0


def test_datafree_run_shows_images_forming_then_stop_keeps_the_result(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/no-data?dataset=mnist-mini&setting=quick&compare=false")
    page.get_by_role("button", name="Start").first.click()
    # the grid of forming images appears while the teacher dreams
    page.wait_for_selector("[data-testid='stImage'] img", timeout=240_000)
    deadline = time.time() + 240
    while time.time() < deadline and _synthesis_step(page) < 35:  # the digits take shape after some 30 steps
        page.wait_for_timeout(500)
    grid = page.locator("[data-testid='stImage']").first
    _scroll_to(grid)
    page.wait_for_timeout(1500)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "no_data_mid_synthesis.png"))
    _no_exception(page)
    page.get_by_role("button", name="Stop").first.click()
    page.wait_for_selector("[data-testid='stAlertContentSuccess']", timeout=180_000)
    assert "stopped" in page.locator("[data-testid='stAlertContentSuccess']").first.inner_text()
    _no_exception(page)
    page.wait_for_timeout(1500)  # the page redraws once more after the run ends: let it settle
    _scroll_to(page.locator("[data-testid='stAlertContentSuccess']").first)  # redrawn as the run ends
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "no_data_stopped.png"))
    page.close()
