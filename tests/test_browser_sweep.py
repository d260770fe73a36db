"""The T x alpha sweep in a real browser (headless Chromium at 1280x720, a projector's
screen): a shared link sets up a 4 x 2 grid on mnist-mini, "All cells together" (the
default) trains the grid as one batch of students, and the heatmap fills in with every cell
at once — each shows its accuracy so far and "epoch e/3", all at the same epoch — until the
sweep ends with final numbers and a best cell. Screenshots of both moments go to
artifacts/screenshots/sweep-live-*.png (a person looks at them: the live one must show the
whole landscape, not a few cells). Nothing here is timed: the waits are long, and the test
fails only on what is wrong or missing."""

from __future__ import annotations

import re

import pytest
from test_browser import IDLE, SHOTS, _no_exception, _open

pytestmark = [pytest.mark.browser, pytest.mark.slow]
LINK = "compare?dataset=mnist-mini&T=1,4&alpha=0.5,0.9&seeds=1&epochs=2"
LIVE = re.compile(r"epoch (\d+)/2")


def _cells(page, key: str) -> list[str]:
    """The texts of a heatmap's cells, as drawn (SVG text of the chart with this key)."""
    return page.locator(f".st-key-{key} .heatmap-label text").evaluate_all("els => els.map(e => e.textContent)")


def _show_from(page, locator) -> None:
    """Scroll so that ``locator`` is the first thing below Streamlit's header bar, with the
    mouse parked where it draws no hover box."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.mouse.move(1250, 700)
    page.mouse.wheel(0, -80)  # out from under the header
    page.wait_for_timeout(400)


def test_the_sweep_heatmap_fills_in_with_every_cell_at_once(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/{LINK}")
    page.get_by_role("tab", name="T × alpha sweep").click()
    page.wait_for_timeout(500)
    together = page.get_by_role("radio", name="All cells together (one batch of students)")
    assert together.is_checked()
    assert page.locator(".st-key-cmp_sw_workers input").is_disabled()  # no worker processes in a batch
    page.get_by_role("button", name="▶ Run sweep").click()

    # the batch's first epoch ends: every cell of the grid shows it at once
    page.locator(".st-key-cmp_hm_acc_kd_0-1 .heatmap-label text", has_text=LIVE).first.wait_for(timeout=300_000)
    page.wait_for_timeout(1500)  # the fragment's next redraw: both heatmaps drawn
    cells = [c for c in _cells(page, "cmp_hm_acc_kd_0-1") if c.strip() and c.strip() != "…"]
    epochs = {m.group(1) for c in cells if (m := LIVE.search(c))}
    assert len(cells) == 4 and len(epochs) == 1, cells  # 4 cells, all live, all at one epoch
    bar = page.get_by_text(re.compile(r"All 4 cells training together \(5 students in one batch\) — epoch \d of 2"))
    _show_from(page, bar.first)
    page.screenshot(path=str(SHOTS / "sweep-live-training.png"))
    _no_exception(page)

    # the end: final numbers in every cell, one best cell, no epoch left
    page.get_by_text(re.compile(r"Sweep finished: 5 runs")).first.wait_for(timeout=300_000)
    page.wait_for_timeout(1000)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(1000)
    _no_exception(page)
    cells = [c for c in _cells(page, "cmp_hm_acc_kd_0-1") if c.strip() and c.strip() != "…"]
    assert len(cells) == 4 and not [c for c in cells if "epoch" in c], cells
    assert sum("★" in c for c in cells) == 1, cells
    assert page.get_by_text("Best cell").first.is_visible()
    _show_from(page, page.get_by_text(re.compile(r"Sweep finished")).first)
    page.screenshot(path=str(SHOTS / "sweep-live-end.png"))
    page.close()
