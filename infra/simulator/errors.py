"""OpenAI-style error bodies `{"error": {message, type, param, code}}` (docs/rate-limits.md#429-kinds)."""

from __future__ import annotations

import math

from infra.simulator.config import Limits
from infra.simulator.ratelimit import go_duration

ORG = "org-ultraforge-sim"
_MORE = "Visit https://platform.openai.com/account/rate-limits to learn more."
_DIMENSION = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)"}

SERVER_ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    """The error envelope every OpenAI endpoint uses."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def rate_limit(kind: str, model: str, limit: int, used: int, requested: int, wait: float) -> dict:
    """A retryable 429: `kind` is "requests" or "tokens"."""
    message = (
        f"Rate limit reached for {model} in organization {ORG} on {_DIMENSION[kind]}: "
        f"Limit {limit}, Used {used}, Requested {requested}. "
        f"Please try again in {go_duration(wait)}. {_MORE}"
    )
    return error_body(message, kind, "rate_limit_exceeded")


def too_large(model: str, limit: int, requested: int) -> dict:
    """A 429 that no retry can fix: the request alone exceeds a minute's tokens."""
    message = (
        f"Request too large for {model} in organization {ORG} on tokens per min (TPM): "
        f"Limit {limit}, Requested {requested}. "
        "The input or output tokens must be reduced in order to run successfully. " + _MORE
    )
    return error_body(message, "tokens", "rate_limit_exceeded")


def insufficient_quota() -> dict:
    """A 429 that no retry can fix: the configured quota is spent."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
    return error_body(message, "insufficient_quota", "insufficient_quota")


def server_error(status: int) -> dict:
    """A 5xx body."""
    return error_body(SERVER_ERRORS[status], "server_error")


def queue_full() -> dict:
    """The 503 of a server whose waiting queue is full (retryable, no retry-after)."""
    return error_body("The server is overloaded: too many requests are waiting. Please retry later.",
                      "server_error")


def invalid_prompt() -> dict:
    """A 400 that no retry of the same prompt can fix (a batch line's `line_failure_statuses` 400)."""
    message = ("Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
               "Please try again with a different prompt.")
    return error_body(message, "invalid_request_error", "invalid_prompt")


def invalid_request(message: str, param: str | None = None) -> dict:
    """A 400 body for a request the simulator cannot read."""
    return error_body(message, "invalid_request_error", None, param)


def retry_after_headers(seconds: float, limits: Limits) -> dict[str, str]:
    """`retry-after` (whole seconds, rounded up) and `retry-after-ms`, each switchable off."""
    out = {}
    if limits.retry_after:
        out["retry-after"] = str(max(1, math.ceil(seconds)))
    if limits.retry_after_ms:
        out["retry-after-ms"] = str(max(1, math.ceil(seconds * 1000)))
    return out
