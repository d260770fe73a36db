"""Shared test set-up: a private cache folder for the whole session (so tests never touch
the user's ~/.cache) that persists teachers between tests, and no downloads. The default
teachers (digits, mnist-mini, fashion-mnist) and the Lesson's student alone come from
kd_core/shipped (the teacher store looks there before this cache), so a fresh test home
trains none of them. Under pytest-xdist (``make test`` runs two workers) each worker has
a home of its own, so no test sees another's runs.

The browser tests share one app server and one headless Chromium per worker (``server``,
``browser``): like a class's server, it has served other sessions before a test's own; a
test that needs a server nobody has opened yet starts its own with ``app_server()``."""

import os
import tempfile
from pathlib import Path

import pytest

_HOME = os.environ.get("KD_TEST_HOME") or str(Path(tempfile.gettempdir()) / "kd-playground-test-home")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers: each its own home (run store, caches)
    _HOME = str(Path(_HOME) / os.environ["PYTEST_XDIST_WORKER"])
os.environ.setdefault("KD_PLAYGROUND_HOME", _HOME)
os.environ["KD_PLAYGROUND_OFFLINE"] = "1"
os.environ.setdefault("KD_PLAYGROUND_DEVICE", "cpu")


@pytest.fixture(scope="session")
def kd_home() -> Path:
    return Path(os.environ["KD_PLAYGROUND_HOME"])


@pytest.fixture(scope="session")
def server():
    # no warm-up visit: the pages live in app_pages/, not pages/, so a deep link opened before
    # any other session gets the app's own navigation (Streamlit builds a page list of its own
    # from a pages/ folder, and that is what a first deep link used to show)
    from test_browser import app_server

    with app_server() as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    from test_browser import ARGS, CHROMIUM, _require_browser

    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()
