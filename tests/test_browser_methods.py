"""In a real browser: a CTKD run started from the Lab draws its learned temperature live
beside the loss curves, and the Soft targets page's standardisation switch adds the
z-scored probabilities. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import pytest
from test_browser import IDLE, SHOTS, _no_exception, _open, _scroll_to

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_lab_draws_ctkds_learned_temperature(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/lab?method=ctkd&dataset=digits&epochs=4")
    _no_exception(page)
    page.get_by_role("button", name="▶ Train").click()
    chart = page.get_by_text("Learned T (CTKD)").first
    chart.wait_for(timeout=240_000)  # drawn live, while the run goes on
    _scroll_to(chart)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(SHOTS / "lab-ctkd-live.png"))
    page.get_by_text("Results").first.wait_for(timeout=300_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(1500)
    _no_exception(page)
    chart = page.get_by_text("Learned T (CTKD)").first
    _scroll_to(chart)
    page.wait_for_timeout(800)
    assert chart.is_visible()
    assert page.get_by_text("learned temperature T").first.is_visible()  # the legend
    assert page.get_by_text("Final T:").first.is_visible()
    page.screenshot(path=str(SHOTS / "lab-ctkd-learned-T.png"))
    page.screenshot(path=str(SHOTS / "lab-ctkd-full.png"), full_page=True)
    page.close()


def test_soft_targets_standardisation_switch(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/soft-targets?T=2&zscore=true")
    _no_exception(page)
    legend = page.get_by_text("teacher at T = 2, standardised logits").first
    _scroll_to(legend)
    page.wait_for_timeout(800)
    assert legend.is_visible()
    assert page.get_by_text("Standardised logits:").first.is_visible()
    page.screenshot(path=str(SHOTS / "soft-targets-zscore.png"))
    page.close()
