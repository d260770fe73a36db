"""The Language models page in a real browser (headless Chromium): it opens from a shared
link in English and Chinese, a short run trains from the Train button to the end, and no
exception box appears. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import pytest

from tests.test_browser import IDLE, SHOTS, _no_exception, _open

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TINY = "teacher_steps=20&steps=10"


@pytest.mark.parametrize(
    "lang,title,train,done",
    [
        ("en", "Language models", "▶ Train", "Finished after 10 steps."),
        ("zh", "语言模型", "▶ 训练", "已完成，共 10 步。"),
    ],
)
def test_language_models_page_trains_in_the_browser(server, browser, lang, title, train, done):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    query = TINY + ("&lang=zh" if lang == "zh" else "")
    _open(page, f"{server}/language-models?{query}")
    _no_exception(page)
    assert page.get_by_role("heading", name=title).first.is_visible()
    page.screenshot(path=str(SHOTS / f"language-models-{lang}-open.png"))
    page.get_by_role("button", name=train, exact=True).click()
    page.get_by_text(done).first.wait_for(timeout=300_000)
    page.wait_for_timeout(1500)
    page.wait_for_selector(IDLE, timeout=120_000)
    _no_exception(page)
    page.screenshot(path=str(SHOTS / f"language-models-{lang}.png"), full_page=True)
    page.close()
