"""Client-side pacing for one (endpoint, model): RPM/TPM buckets, header corrections, AIMD concurrency.

One Limiter per (endpoint, api model) per process, shared by every gateway in it (Prefect runs
shard tasks in threads, each with its own event loop), so state is guarded by threading locks and
waiters are woken on their own loop.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from collections.abc import Mapping

from tasks.core.pool import Limits

# Pace a little under the published limit and keep bursts to half a second of budget: endpoints
# enforce limits per second or finer (OPENAI-API.md §3), so a full-minute burst would 429.
SAFETY = 0.98
BURST_S = 0.5
# Queueing shows as latency: back off when the average latency doubles over the best seen, by
# more than a slack that keeps client-side jitter on near-zero-latency endpoints from counting.
LATENCY_GROWTH = 2.0
LATENCY_SLACK_S = 0.1
_GO_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go-style duration such as `6m0s`, `1.5s`, `12ms`; None if unparseable."""
    parts = _GO_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * _GO_UNIT[u] for n, u in parts)


class Bucket:
    """Token bucket with reservations: taking more than is there books a wait instead of failing."""

    def __init__(self, per_minute: float):
        self.level = 0.0
        self.stamp = time.monotonic()
        self.set_limit(per_minute)
        self.level = self.capacity

    def set_limit(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute * SAFETY / 60.0
        self.capacity = max(1.0, self.rate * BURST_S)
        self.level = min(self.level, self.capacity)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount`; return the seconds to wait before the taken budget is really there."""
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float, now: float) -> None:
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def drain(self, now: float) -> None:
        self._refill(now)
        self.level = min(self.level, 0.0)


class AdaptiveSlots:
    """A cross-thread semaphore whose size can change (AIMD)."""

    def __init__(self, limit: int, ceiling: int):
        self.limit, self.ceiling, self.in_flight = limit, ceiling, 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.in_flight < self.limit and not self._waiters:
                self.in_flight += 1
                return
            fut = loop.create_future()
            self._waiters.append((loop, fut))
        try:
            await fut  # the slot was counted for us by whoever woke us
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled: give it back
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self._wake()

    def resize(self, limit: int) -> None:
        with self._lock:
            self.limit = max(1, min(self.ceiling, limit))
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            loop, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.in_flight += 1
            loop.call_soon_threadsafe(self._hand_over, fut)

    def _hand_over(self, fut: asyncio.Future) -> None:
        if fut.done():  # cancelled between wake-up and hand-over: give the slot back
            self.release()
        else:
            fut.set_result(None)


class Limiter:
    """Admission control for one (endpoint, model)."""

    def __init__(self, limits: Limits):
        self._lock = threading.Lock()
        self.requests = Bucket(limits.rpm) if limits.rpm else None
        self.tokens = Bucket(limits.tpm) if limits.tpm else None
        self.refunds = limits.refund_unused_tokens
        # Endpoints that publish limits get the full ceiling; the others start low and adapt.
        self.adaptive = not (limits.rpm or limits.tpm)
        start = limits.initial_concurrency if self.adaptive else limits.max_concurrency
        self.slots = AdaptiveSlots(min(start, limits.max_concurrency), limits.max_concurrency)
        self.paused_until = 0.0
        self._successes = 0
        self._last_decrease = 0.0
        self._latency_floor: float | None = None
        self._latency_avg = 0.0
        self._floor_stamp = time.monotonic()

    async def admit(self, tokens: int) -> None:
        """Wait until a request costing `tokens` (prompt estimate + max_tokens) may be sent.

        Holds a concurrency slot on return: the caller must call `finish`.
        """
        await self._sleep_out_pause()
        with self._lock:
            now = time.monotonic()
            wait = max(self.requests.reserve(1, now) if self.requests else 0.0,
                       self.tokens.reserve(tokens, now) if self.tokens else 0.0)
        if wait > 0:
            await asyncio.sleep(wait)
        await self.slots.acquire()
        try:
            await self._sleep_out_pause()  # a 429 may have paused the endpoint while we queued
        except BaseException:
            self.slots.release()
            raise

    async def _sleep_out_pause(self) -> None:
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def finish(self, *, reserved: int, used: int | None, latency: float | None) -> None:
        """Release the slot; on success (`latency` set) grow concurrency and refund tokens."""
        self.slots.release()
        now = time.monotonic()
        with self._lock:
            if used is not None and self.refunds and self.tokens and used < reserved:
                self.tokens.refund(reserved - used, now)
            if latency is None:
                return
            if self._latency_floor is None:
                self._latency_floor = self._latency_avg = latency
            # the floor drifts up 2%/s so a permanently slower endpoint becomes the new normal
            drift = 1 + 0.02 * max(0.0, now - self._floor_stamp)
            self._floor_stamp = now
            self._latency_floor = min(latency, self._latency_floor * drift)
            self._latency_avg = 0.8 * self._latency_avg + 0.2 * latency
            if self.adaptive and self._latency_avg > (LATENCY_GROWTH * self._latency_floor
                                                      + LATENCY_SLACK_S):
                self._decrease_locked(now)
                return
            self._successes += 1
            if self._successes >= self.slots.limit and self.slots.limit < self.slots.ceiling:
                self._successes = 0
                self.slots.resize(self.slots.limit + 1)

    def overloaded(self, retry_after: float | None) -> None:
        """A 429/503 came back: stop admitting for `retry_after`; halve concurrency (AIMD) where
        no rate limits are known (with known limits the buckets, drained here, do the pacing)."""
        now = time.monotonic()
        with self._lock:
            for bucket in (self.requests, self.tokens):
                if bucket:
                    bucket.drain(now)
            if retry_after:
                self.paused_until = max(self.paused_until, now + retry_after)
            if self.adaptive:
                self._decrease_locked(now)

    def _decrease_locked(self, now: float) -> None:
        if now - self._last_decrease > 1.0:  # at most once per second: one signal per burst
            self._last_decrease = now
            self._successes = 0
            self.slots.resize(self.slots.limit // 2)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Correct budgets from `x-ratelimit-*` headers (limits learnt, pause when exhausted)."""
        now = time.monotonic()
        with self._lock:
            for dim in ("requests", "tokens"):
                limit = headers.get(f"x-ratelimit-limit-{dim}")
                if not limit or not limit.isdigit() or int(limit) <= 0:
                    continue  # absent, or Azure-style degenerate values
                bucket = getattr(self, dim)
                if bucket is None:
                    setattr(self, dim, Bucket(int(limit)))
                    if self.adaptive:
                        self.adaptive = False
                        self.slots.resize(self.slots.ceiling)
                elif bucket.per_minute != int(limit):
                    bucket.set_limit(int(limit))
                remaining = headers.get(f"x-ratelimit-remaining-{dim}", "")
                reset = parse_go_duration(headers.get(f"x-ratelimit-reset-{dim}", ""))
                if remaining.isdigit() and int(remaining) == 0 and reset:
                    self.paused_until = max(self.paused_until, now + reset)


_LIMITERS: dict[tuple[str, str, str], Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(base_url: str, api_model: str, limits: Limits, account: str = "") -> Limiter:
    """The process-wide Limiter for (endpoint URL, api model, account): limits are per model per
    account, and `account` (a fingerprint of the API key, never the key) keeps two keys apart."""
    with _LIMITERS_LOCK:
        key = (base_url, api_model, account)
        if key not in _LIMITERS:
            _LIMITERS[key] = Limiter(limits)
        return _LIMITERS[key]
