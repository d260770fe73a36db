"""Errors a user can cause. They carry one line saying what is wrong and what is allowed.

The CLI turns them into exit status 2 with that line on stderr; the app shows them with
``st.error``. Anything else that escapes is a bug.
"""


class KDError(Exception):
    """Base class of every error a user can fix by changing their input."""


class ConfigError(KDError, ValueError):
    """A configuration value is out of range, unknown, or inconsistent."""


class DataUnavailableError(KDError, RuntimeError):
    """A dataset needs files that are not on disk and cannot be downloaded."""
