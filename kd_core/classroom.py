"""A class on one server: who may manage which runs, and the limits that keep one student
from taking the server.

- **Ownership.** A saved run belongs to the browser session that made it; only that session
  renames or deletes it (``kd_core.runs.rename/delete(..., by=session)``); everyone else
  sees it read-only and may copy it to their own list (``runs.copy``).
- **Lecturer mode.** Unlocked by a password that the server sets — the environment variable
  ``KD_PLAYGROUND_LECTURER_PASSWORD`` or ``lecturer_password`` in Streamlit's secrets, never a
  file of the repository. A lecturer may manage every run and clear a class's runs after a
  lesson. No password set: nobody is a lecturer.
- **Limits** (settable by the server, see ``Limits.from_env``): at most ``session_jobs`` queued
  or running jobs per session; in classroom mode (``KD_PLAYGROUND_CLASSROOM=1``) runs are
  capped in epochs and in training images, each refusal saying which limit was reached.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from .config import Config
from .errors import KDError

PASSWORD_ENV = "KD_PLAYGROUND_LECTURER_PASSWORD"
SECRET_NAME = "lecturer_password"
# training-set sizes of the datasets' published splits (the embedded ones are far below any cap)
TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000, "cifar10": 50_000}


class LimitReached(KDError):
    """A per-session or classroom limit refused a run; the message says which and why."""


def lecturer_password(secrets: Mapping | None = None) -> str | None:
    """The lecturer password the server set (environment first, then Streamlit's secrets);
    None when none is set — then nobody has lecturer rights."""
    value = os.environ.get(PASSWORD_ENV)
    if not value and secrets is not None:
        try:
            value = secrets.get(SECRET_NAME)
        except Exception:  # no secrets file: Streamlit raises on access
            value = None
    value = str(value or "")
    return value or None


def check_password(given: str, expected: str | None) -> bool:
    """True when a password is set and ``given`` matches it (constant-time comparison)."""
    if not expected or not given:
        return False
    return hmac.compare_digest(str(given).encode(), expected.encode())


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw) if raw.strip() else default
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Limits:
    session_jobs: int = 16  # queued or running jobs of one session (a method comparison queues several)
    classroom: bool = False
    max_epochs: int = 20  # classroom mode only
    max_train_images: int = 20_000  # classroom mode only: larger datasets need a train subset

    @classmethod
    def from_env(cls) -> Limits:
        """``KD_PLAYGROUND_SESSION_JOBS``, ``KD_PLAYGROUND_CLASSROOM`` (1/true/yes),
        ``KD_PLAYGROUND_MAX_EPOCHS``, ``KD_PLAYGROUND_MAX_TRAIN_IMAGES``; unset or invalid
        values keep the defaults."""
        d = cls()
        return cls(
            session_jobs=_env_int("KD_PLAYGROUND_SESSION_JOBS", d.session_jobs),
            classroom=os.environ.get("KD_PLAYGROUND_CLASSROOM", "").strip().lower() in ("1", "true", "yes", "on"),
            max_epochs=_env_int("KD_PLAYGROUND_MAX_EPOCHS", d.max_epochs),
            max_train_images=_env_int("KD_PLAYGROUND_MAX_TRAIN_IMAGES", d.max_train_images),
        )

    def check_run(self, config: Config, train_images: int | None = None) -> None:
        """Refuse a run over the classroom caps (nothing is refused outside classroom mode).
        ``train_images``: the size of the run's training set, when known."""
        if not self.classroom:
            return
        if config.epochs > self.max_epochs:
            raise LimitReached(
                f"this classroom server allows at most {self.max_epochs} epochs per run (asked: {config.epochs})"
            )
        n = config.train_subset or train_images or TRAIN_IMAGES.get(config.dataset)
        if n is not None and n > self.max_train_images:
            raise LimitReached(
                f"this classroom server trains on at most {self.max_train_images:,} images per run "
                f"({config.dataset} has {n:,}): choose a smaller training subset"
            )

    def check_session(self, active_jobs: int) -> None:
        """Refuse one more job for a session that already has ``active_jobs`` queued or running."""
        if active_jobs >= self.session_jobs:
            raise LimitReached(
                f"you already have {active_jobs} runs queued or running (at most {self.session_jobs} per "
                "session on this server): wait for one to finish or stop one"
            )
