"""Shared test set-up: a private cache folder for the whole session (so tests never touch
the user's ~/.cache) that persists teachers between tests, and no downloads. The default
teachers (digits, mnist-mini, fashion-mnist) and the Lesson's student alone come from
kd_core/shipped (the teacher store looks there before this cache), so a fresh test home
trains none of them. Under pytest-xdist (``make test`` runs two workers) each worker has
a home of its own, so no test sees another's runs."""

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
