"""The whole error vocabulary. Errors are classified once, at the adapter boundary."""

from __future__ import annotations


class UltraforgeError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class ConfigError(UltraforgeError):
    """Invalid configuration: names the file, the line/key and a hint."""


class FatalAPIError(UltraforgeError):
    """A failure that retrying cannot fix (quota, request too large, 400/401/403/404)."""

    def __init__(self, endpoint: str, reason: str):
        super().__init__(f"endpoint {endpoint!r}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class RetryableAPIError(UltraforgeError):
    """A transient failure (rate limit, 5xx, timeout); `retry_after` is the server's hint in s."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class RejectedRequestError(UltraforgeError):
    """The endpoint refused this one request (context length, content filter): not retried, not fatal."""
