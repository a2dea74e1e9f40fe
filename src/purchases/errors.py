"""The product's exception hierarchy: one root, with transient/permanent markers for retries."""

from __future__ import annotations


class PurchasesError(Exception):
    """Root of every error the product raises on purpose; its message is shown to the user."""


class TransientError(PurchasesError):
    """A failure worth retrying with backoff (connection reset, lock wait, throttling)."""


class PermanentError(PurchasesError):
    """A failure that retrying cannot fix; the step stops and the run is recorded failed."""


class ConfigError(PermanentError):
    """A setting is missing or invalid; the message names the setting and the fix."""


class InputError(PermanentError):
    """User input (a path, a date, a file) is unusable; the message names it."""
