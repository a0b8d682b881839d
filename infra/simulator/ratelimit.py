"""Per-model admission with continuously refilled request and token buckets.

Limits are enforced per second, not per minute (docs/rate-limits.md#quantisation): a bucket holds
`limit × bucket_seconds / 60` and refills at `limit / 60` per second, so bursts 429 even when
the minute's total is within limits. A request costing more than a bucket holds still passes
when the bucket is full (it goes into debt), as large single requests do on the real API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from infra.simulator.config import Limits

_EPS = 1e-9


def go_duration(seconds: float) -> str:
    """Go's Duration.String() at millisecond resolution, rounded up: 12ms, 1s, 1.5s, 6m0s."""
    ms = math.ceil(seconds * 1000 - _EPS) if seconds > 0 else 0
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


class Bucket:
    """`limit` per minute, holding at most `limit × seconds / 60`; the level may go negative."""

    __slots__ = ("limit", "rate", "capacity", "level", "updated")

    def __init__(self, limit: int, seconds: float, now: float):
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = limit * seconds / 60.0
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def fits(self, cost: float) -> bool:
        """Enough in the bucket, or the bucket is full and the cost is within a minute's limit."""
        full = self.level >= self.capacity - _EPS
        return self.level >= cost - _EPS or (full and cost <= self.limit)

    def wait(self, cost: float) -> float:
        """Seconds until `fits(cost)` becomes true."""
        return max(0.0, (min(cost, self.capacity) - self.level) / self.rate)

    def remaining(self) -> int:
        """The level in per-minute units: 0 exactly when the bucket is empty."""
        return max(0, math.floor(self.level / self.capacity * self.limit + _EPS))

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class Admission:
    """The verdict on one request: `rejected` is None, "requests" or "tokens"."""

    rejected: str | None = None
    retry_after: float = 0.0
    limit: int = 0
    used: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """One request bucket and one token bucket per API model name."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, tuple[Bucket | None, Bucket | None]] = {}

    def too_large(self, cost: int) -> bool:
        """More tokens than a whole minute allows: never admissible, retrying cannot help."""
        return self.limits.tpm is not None and cost > self.limits.tpm

    def admit(self, model: str, cost: int) -> Admission:
        """Take one request and `cost` tokens from the model's buckets, or say why not."""
        requests, tokens = self._refilled(model)
        verdict = Admission()
        for name, bucket, amount in (("requests", requests, 1), ("tokens", tokens, cost)):
            if bucket is not None and not bucket.fits(amount):
                used = bucket.limit - bucket.remaining()
                verdict = Admission(name, bucket.wait(amount), bucket.limit, used)
                break
        else:
            for bucket, amount in ((requests, 1), (tokens, cost)):
                if bucket is not None:
                    bucket.level -= amount
        verdict.headers = self._headers(requests, tokens)
        return verdict

    def headers(self, model: str) -> dict[str, str]:
        """Current x-ratelimit-* headers for `model` (empty when switched off or unlimited)."""
        return self._headers(*self._refilled(model))

    def refund(self, model: str, tokens: int) -> None:
        """True-up: give back reserved tokens a completion did not use."""
        bucket = self._refilled(model)[1]
        if bucket is not None and tokens > 0:
            bucket.level = min(bucket.capacity, bucket.level + tokens)

    def _refilled(self, model: str) -> tuple[Bucket | None, Bucket | None]:
        now = self.clock()
        pair = self._buckets.get(model)
        if pair is None:
            lim = self.limits
            pair = tuple(
                Bucket(limit, lim.bucket_seconds, now) if limit else None for limit in (lim.rpm, lim.tpm)
            )
            self._buckets[model] = pair
        for bucket in pair:
            if bucket is not None:
                bucket.refill(now)
        return pair

    def _headers(self, requests: Bucket | None, tokens: Bucket | None) -> dict[str, str]:
        if not self.limits.ratelimit_headers:
            return {}
        out = {}
        for name, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is not None and self.limits.degenerate_headers:
                out.update({f"x-ratelimit-limit-{name}": "-1", f"x-ratelimit-remaining-{name}": "0",
                            f"x-ratelimit-reset-{name}": "0s"})
            elif bucket is not None:
                out[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
                out[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining())
                out[f"x-ratelimit-reset-{name}"] = go_duration(bucket.reset())
        return out
