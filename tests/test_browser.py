"""End to end in a real browser: `streamlit run app.py`, headless Chromium driven by
Playwright (every page is opened in both languages by test_browser_classroom), a short training run from the Lab
through the UI until its results appear, and no exception box anywhere."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

pytestmark = pytest.mark.browser


def _require_browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("KD_REQUIRE_BROWSER") or os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (see .ci/run)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server():
    """A fresh `streamlit run app.py` on a free port; yields its URL once /_stcore/health
    answers. No page is opened first: a deep link may be the server's very first request."""
    _require_browser()
    port = _free_port()
    env = dict(os.environ)
    (ROOT / "artifacts").mkdir(exist_ok=True)
    log = open(ROOT / "artifacts" / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        log.close()
        pytest.fail("the app did not answer /_stcore/health within 90 s")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open(page, url: str, timeout_ms: int = 180_000):
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_timeout(500)
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    page.wait_for_timeout(800)


def _scroll_to(locator, tries: int = 5) -> None:
    """Scroll ``locator`` into view. A page that redraws live (a run's charts, its notices) can
    replace the element while it is being scrolled to ("not attached to the DOM", seen under
    load): find it again and retry, a few times."""
    from playwright.sync_api import Error as PlaywrightError

    for i in range(tries):
        try:
            locator.scroll_into_view_if_needed(timeout=30_000)
            return
        except PlaywrightError:
            if i == tries - 1:
                raise
            locator.page.wait_for_timeout(1000)


def _no_exception(page):
    boxes = page.locator("[data-testid='stException']")
    assert boxes.count() == 0, boxes.first.inner_text()


def test_a_short_training_run_from_the_lab(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    _open(page, f"{server}/lab")
    # one epoch keeps the test short: set it in the number input, then train
    epochs = page.get_by_role("spinbutton", name="Epochs", exact=True)
    epochs.fill("1")
    epochs.press("Enter")
    page.wait_for_timeout(500)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.get_by_role("button", name="▶ Train").click()
    page.get_by_text("Results").first.wait_for(timeout=240_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.get_by_text("distilled student").first.is_visible()
    assert page.get_by_text("scratch student").first.is_visible()
    page.screenshot(path=str(SHOTS / "lab-results.png"), full_page=True)
    page.close()


def _png_of_a_one(paper: int, ink: int) -> bytes:
    import io

    from PIL import Image, ImageDraw

    img = Image.new("L", (300, 300), paper)
    d = ImageDraw.Draw(img)
    d.line([(220, 30), (232, 110)], fill=ink, width=9)
    d.line([(220, 30), (206, 44)], fill=ink, width=7)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _to_top(page, text: str):
    page.get_by_text(text).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def _own_chart(page):
    return page.locator(".st-key-st_chart_own")


def test_draw_and_upload_a_digit_on_the_soft_targets_page(server, browser):
    """Draw a "7" with the mouse on the canvas component, then upload a PNG and a bad file:
    the soft targets of the drawn/uploaded image appear, the bad file gets an error box."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    _open(page, f"{server}/soft-targets")
    _scroll_to(page.get_by_text("Your own digit").first)
    assert page.get_by_text("Draw a digit on the black square").first.is_visible()
    assert _own_chart(page).count() == 0
    pad = page.frame_locator("iframe[title*='kd_draw_canvas']").locator("canvas")
    pad.wait_for(timeout=120_000)
    page.wait_for_timeout(500)
    box = pad.bounding_box()
    assert box and box["width"] >= 300 and abs(box["height"] - box["width"]) < 1  # large enough for a projector
    x0, y0, w = box["x"], box["y"], box["width"]
    page.mouse.move(x0 + 0.25 * w, y0 + 0.2 * w)  # a "7": the bar, then the diagonal
    page.mouse.down()
    page.mouse.move(x0 + 0.75 * w, y0 + 0.2 * w, steps=12)
    page.mouse.move(x0 + 0.45 * w, y0 + 0.85 * w, steps=16)
    page.mouse.up()
    _own_chart(page).wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(1500)
    _no_exception(page)
    assert page.get_by_text("The teacher reads").first.is_visible()
    _to_top(page, "Your own digit")
    page.mouse.move(5, 5)
    page.screenshot(path=str(SHOTS / "soft-targets-draw.png"))
    page.frame_locator("iframe[title*='kd_draw_canvas']").get_by_role("button", name="Clear").click()
    page.get_by_text("Draw a digit on the black square").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    assert _own_chart(page).count() == 0

    page.get_by_text("📁 Upload").first.click()
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(500)
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[{"name": "one.png", "mimeType": "image/png", "buffer": _png_of_a_one(paper=255, ink=0)}]
    )
    page.get_by_text("The teacher reads 1").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_timeout(1000)
    _no_exception(page)
    assert _own_chart(page).count() == 1
    _to_top(page, "Your own digit")
    page.screenshot(path=str(SHOTS / "soft-targets-upload.png"))

    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nnot really"}]
    )
    page.get_by_text("Cannot use this image").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    _no_exception(page)
    assert "broken.png" in page.locator("[data-testid='stAlertContentError']").first.inner_text()
    assert _own_chart(page).count() == 0
    page.close()
