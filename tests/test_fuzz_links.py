"""Bad links cannot break a page. Every page of the app is opened from links whose every
query parameter (the ones the page itself writes to its address) holds a bad value — empty,
NaN, infinite, huge, negative, unicode, markup, a list — plus unknown and repeated keys. The
page must not raise, must show a notice for what it ignored, and must stay usable: it draws
its controls with their defaults and its address holds only valid values again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = re.findall(r'st\.Page\("([^"]+)"', (ROOT / "app.py").read_text(encoding="utf-8"))
BAD = [
    "",
    "NaN",
    "inf",
    "-inf",
    "1e309",
    "-7",
    "9" * 40,
    "ünï©ødé ✓ 蒸馏",
    "<script>alert(1)</script>",
    "0x1F",
    "[1, 2]",
    "  ",
    "none;drop",
    "-0.0000001",
]

pytestmark = pytest.mark.slow


def _open(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(page)
    if query is not None:
        at.query_params.clear()
        at.query_params.update(query)
    at.run()
    return at


def _widgets(at: AppTest) -> int:
    kinds = ("selectbox", "slider", "select_slider", "number_input", "checkbox", "toggle", "radio", "button")
    return sum(len(getattr(at, k)) for k in kinds)


def _notices(at: AppTest) -> list[str]:
    return [w.value for w in at.warning] + [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_bad_values_in_every_parameter_leave_the_page_usable(page):
    clean = _open(page)
    assert not clean.exception, clean.exception
    own = [k for k in clean.query_params.keys() if k != "lang"]
    widgets = _widgets(clean)
    assert PAGES and widgets > 0

    for round_ in range(2):
        query: dict = {k: BAD[(i * 5 + round_ * 3) % len(BAD)] for i, k in enumerate(own)}
        query["no_such_setting"] = "1"  # unknown keys are ignored
        if round_ == 1:  # repeated keys: the same name twice in the address
            query = {k: [v, "2"] for k, v in query.items()}
        at = _open(page, query)
        assert not at.exception, f"{page} {query}: {at.exception}"
        assert at.title or at.header, f"{page} drew nothing"
        assert _widgets(at) >= min(widgets, 1), f"{page} lost its controls with {query}"
        given = {k: (v[0] if isinstance(v, list) else v) for k, v in query.items() if k in own}
        now = {k: at.query_params.get(k) for k in at.query_params.keys()}
        refused = [k for k, v in given.items() if now.get(k) != v]
        if refused:
            assert _notices(at), f"{page}: {refused} were ignored without a notice"
        # the page answers the next interaction normally
        at.run()
        assert not at.exception


# presentation mode's step (?present=1&step=3): the pages shown one step per screen, and their step count
SCREENS = {
    "app_pages/lesson.py": ("lesson", 8),
    "app_pages/lab.py": ("lab", 3),
    "app_pages/no_data.py": ("no_data", 2),
    "app_pages/beyond.py": ("beyond", 2),
    "app_pages/language_models.py": ("language_models", 5),
    "app_pages/speech.py": ("speech", 3),
}
HOME = "app_pages/lesson.py"  # the page the app opens on


def _open_presenting(page: str, query: dict) -> AppTest:
    """``page`` opened from a projected link: ?present=1 is read on the session's first run,
    a page's step on its first projected run."""
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({"present": "1"} | (query if page == HOME else {}))
    at.run()
    if page != HOME:
        at.switch_page(page)
        at.query_params.clear()
        at.query_params.update({"present": "1"} | query)
        at.run()
    return at


@pytest.mark.parametrize("page", list(SCREENS))
def test_bad_steps_in_presentation_mode_fall_back_to_the_first(page):
    name, n = SCREENS[page]
    for bad in [*BAD, "0", str(n + 1), "2.0", ["2", "x"]]:
        at = _open_presenting(page, {"step": bad})
        assert not at.exception, f"{page} step={bad!r}: {at.exception}"
        assert at.selectbox(key=f"kd_screen_pick_{name}").value == 1, f"{page} step={bad!r}"
        assert at.query_params.get("step") is None and at.query_params.get("present") == "1"
        assert any("step=" in w for w in _notices(at)), f"{page}: step={bad!r} was ignored without a notice"
        at.button(key=f"kd_screen_next_top_{name}").click().run()  # the page answers normally
        assert not at.exception and at.query_params.get("step") == "2"
