"""Shared test set-up: a private cache folder for the whole session (so tests never touch
the user's ~/.cache) that persists teachers between tests, and no downloads. The default
teachers (digits, mnist-mini, fashion-mnist) and the Lesson's student alone come from
kd_core/shipped (the teacher store looks there before this cache), so a fresh test home
trains none of them."""

import os
import tempfile
from pathlib import Path

import pytest

_HOME = os.environ.get("KD_TEST_HOME") or str(Path(tempfile.gettempdir()) / "kd-playground-test-home")
os.environ.setdefault("KD_PLAYGROUND_HOME", _HOME)
os.environ["KD_PLAYGROUND_OFFLINE"] = "1"
os.environ.setdefault("KD_PLAYGROUND_DEVICE", "cpu")


@pytest.fixture(scope="session")
def kd_home() -> Path:
    return Path(os.environ["KD_PLAYGROUND_HOME"])
