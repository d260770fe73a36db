"""In a real browser: switching the language keeps every control's value (the Lab trained
the student alone after a switch: the selectboxes sent their English labels back), and a
reloaded Lab finds its last run again (run=<id> in the address bar). That the Lesson answers
at /lesson in both languages is test_browser_classroom's."""

from __future__ import annotations

import re

import pytest
from test_browser import IDLE, SHOTS, _no_exception, _open, _scroll_to

from kd_app import i18n

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ZH = i18n.catalogue("zh")


def _settle(page, ms: int = 600):
    page.wait_for_timeout(ms)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.wait_for_timeout(400)


def _selectbox(page, key: str):
    return page.locator(f".st-key-{key} input[role='combobox']")


def test_the_language_switch_keeps_the_labs_method_and_T(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/lab?epochs=1&dataset=digits")  # the smallest data: the run is not the point
    # pick Decoupled KD in the method box
    _selectbox(page, "lab_method").click()
    page.get_by_role("option", name=re.compile("Decoupled KD")).click()
    _settle(page)
    # T = 8: three steps right from 4 on the select slider (4 -> 5 -> 6 -> 8)
    thumb = page.locator(".st-key-lab_T input[type='range']")
    _scroll_to(thumb)
    thumb.focus()
    for _ in range(3):
        thumb.press("ArrowRight")
    _settle(page)
    assert re.search(r"\b(T|temperature)=8", page.url) and "method=dkd" in page.url
    # switch to Chinese: the boxes show their Chinese labels, the values stay
    page.get_by_text("简体中文").first.click()
    _settle(page, 1000)
    assert _selectbox(page, "lab_method").input_value().startswith(ZH["methods.dkd"])
    assert i18n.text("datasets.digits", "zh") in _selectbox(page, "lab_dataset").input_value()
    page.screenshot(path=str(SHOTS / "lab-zh-after-switch.png"))
    # train: the run is DKD at T = 8, on digits
    page.get_by_role("button", name=ZH["lab.train"]).click()
    page.get_by_text(ZH["lab.results.header"]).first.wait_for(timeout=240_000)
    _settle(page, 1500)
    _no_exception(page)
    page.wait_for_function("() => /[?&]run=/.test(location.search)", timeout=120_000)
    caption = page.get_by_text(re.compile(r"运行 #\d+")).first.inner_text()
    assert "dkd" in caption and "digits" in caption and "T = 8" in caption.replace("T=", "T = "), caption
    assert page.locator("[data-testid='stAlert']").filter(has_text="unknown dataset").count() == 0
    assert "method=dkd" in page.url and re.search(r"\b(T|temperature)=8", page.url) and "lang=zh" in page.url
    page.screenshot(path=str(SHOTS / "lab-zh-dkd-results.png"), full_page=True)
    # F5: a new session finds the run again from the address bar (?run=<id>), not trained again
    assert re.search(r"[?&]run=", page.url), page.url
    page.reload()
    page.get_by_text(ZH["lab.results.header"]).first.wait_for(timeout=120_000)
    _settle(page, 1000)
    again = page.get_by_text(re.compile(r"运行 #\d+")).first.inner_text()
    assert re.sub(r"#\d+", "", again) == re.sub(r"#\d+", "", caption)  # the same run (a new job number)
    # back to English: still DKD, and the address bar says so
    page.get_by_text("English").first.click()
    _settle(page, 1000)
    assert _selectbox(page, "lab_method").input_value().startswith("Decoupled KD")
    assert "method=dkd" in page.url and "lang=" not in page.url
    page.close()
