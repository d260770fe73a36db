"""The lecture hall, in a real browser: every page at projector sizes (1024x768 and 1280x720)
with no formula clipped at the window's edge and no page wider than the window, and the
presentation mode that a shared link keeps (larger type, sidebar closed)."""

from __future__ import annotations

import re

import pytest
from test_browser import ROOT, SHOTS, _no_exception, _open, app_server, server  # noqa: F401 (fixture)

APP_PAGES = re.findall(r'url_path="([^"]+)"', (ROOT / "app.py").read_text(encoding="utf-8"))

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# every formula (KaTeX display) must end inside the window: a long one scrolls in its own box
CLIPPED = """() => {
  const w = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('.katex-display')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > w + 1) out.push(el.innerText.slice(0, 40) + ' ends at ' + Math.round(r.right));
  }
  const page = document.querySelector('[data-testid="stMain"]') || document.body;
  if (page.scrollWidth > page.clientWidth + 1) out.push('the page is ' + page.scrollWidth + ' px wide');
  return out;
}"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.mark.parametrize("size", [(1024, 768), (1280, 720)])
def test_every_page_fits_a_projector(server, browser, size):  # noqa: F811
    w, h = size
    problems = {}
    SHOTS.mkdir(parents=True, exist_ok=True)
    for path in APP_PAGES:
        page = browser.new_page(viewport={"width": w, "height": h})
        query = "?method=dkd" if path == "lab" else ""  # the DKD formula is the longest
        _open(page, f"{server}/{path}{query}")
        _no_exception(page)
        found = page.evaluate(CLIPPED)
        if found:
            problems[path] = found
        if path == "lab":
            page.screenshot(path=str(SHOTS / f"projector-lab-dkd-{w}x{h}.png"))
        page.close()
    assert not problems, problems


def test_presentation_mode_is_kept_in_the_link(server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    _open(page, f"{server}/lab?present=1")
    _no_exception(page)
    size = page.evaluate("() => parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert size >= 20  # larger type than the default 16 px
    page.screenshot(path=str(SHOTS / "presentation-lab.png"))
    box = page.locator("[data-testid='stSidebar']").bounding_box()
    assert box is None or box["x"] + box["width"] <= 1 or box["width"] <= 1  # closed on a projected link
    assert "present=1" in page.url
    # without it, the usual page
    _open(page, f"{server}/lab")
    assert page.evaluate("() => parseFloat(getComputedStyle(document.documentElement).fontSize)") < 20
    page.close()


def test_a_deep_link_opened_first_on_a_fresh_server_shows_the_apps_navigation(browser):
    """The classroom's first click: a lecturer's link to the Lab, before anyone opened the app.
    It must show the app's navigation (titles, icons, sidebar, language switch) and the
    linked set-up — not Streamlit's page list of file names, nor "Page not found"."""
    with app_server() as url:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        _open(page, f"{url}/lab?method=dkd&T=2")
        _no_exception(page)
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Distillation lab" in nav and "Lesson" in nav and "Soft targets" in nav
        assert "soft targets" not in nav and "feature maps" not in nav  # not file names
        assert page.get_by_text("Page not found").count() == 0
        assert page.get_by_text("Language · 语言").count() >= 1  # the app's own sidebar
        assert "method=dkd" in page.url
        page.screenshot(path=str(SHOTS / "deep-link-first.png"))
        page.close()
