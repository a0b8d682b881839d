"""Client-side pacing for one (endpoint, model): RPM/TPM buckets, header corrections, adaptive concurrency.

One Limiter per (endpoint, api model) per process, shared by every gateway in it (Prefect runs
shard tasks in threads, each with its own event loop), so state is guarded by threading locks and
waiters are woken on their own loop.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from tasks.core.pool import Limits

# Pace a little under the published limit and keep bursts to half a second of budget: endpoints
# enforce limits per second or finer (docs/rate-limits.md#quantisation), so a full-minute burst would 429.
SAFETY = 0.98
BURST_S = 0.5
# Adaptive concurrency, where an endpoint publishes no limits (vLLM, Ollama, TGI). Latency alone
# cannot tell queueing from batching: a vLLM server with every slot busy answers ~3x slower than
# with one request, yet serves more per second. Throughput can: by Little's law it is requests in
# flight / latency, and past the knee (every server slot busy) more in flight only queue. So rounds
# of replies measure it, KneeSearch climbs to the knee, and the limit runs HEADROOM above it so
# the slots never idle while replies travel; a 429/503 lowers and caps it for a while.
HEADROOM = 1.25  # and at least 2 more than the knee
PROBE_UP, PROBE_DOWN = 1.25, 0.8
GAIN = 0.25  # a probe counts when throughput moves by at least this share of the proportional change
ROUND_SUCCESSES = 16  # a round measures max(16, 2 x limit) successes
SATURATED = 0.9  # a round with fewer in flight on average than this share of the limit is void
RESEARCH_ROUNDS = 8  # operating rounds before the knee is searched again (2 after it moved)
OVERLOAD_DECREASE = 0.9  # and caps the limit there for a while
# Refusals (429/503) are an overload only when, lately (over REFUSAL_WINDOW_S or two latencies),
# there were REFUSALS_MIN of them and at least REFUSAL_SHARE of the successes: over capacity,
# every request beyond it is refused at once and its slot goes to the next one, so refusals soon
# outnumber successes; a few percent of stray 5xx/429 faults are no reason to slow down.
REFUSAL_SHARE, REFUSALS_MIN, REFUSAL_WINDOW_S = 0.5, 5, 1.0
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
    """A cross-thread semaphore whose size can change; it integrates requests in flight over time
    (`area`), so a round's average in flight is known without sampling."""

    def __init__(self, limit: int, ceiling: int, clock: Callable[[], float] = time.monotonic):
        self.limit, self.ceiling, self.in_flight = limit, ceiling, 0
        self._clock = clock
        self._area, self._stamp = 0.0, clock()
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = deque()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.in_flight < self.limit and not self._waiters:
                self._add(1)
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
            self._add(-1)
            self._wake()

    def resize(self, limit: int) -> None:
        with self._lock:
            self.limit = max(1, min(self.ceiling, limit))
            self._wake()

    def area(self) -> float:
        """Request-seconds in flight since creation."""
        with self._lock:
            now = self._clock()
            return self._area + self.in_flight * (now - self._stamp)

    def _add(self, delta: int) -> None:
        now = self._clock()
        self._area += self.in_flight * (now - self._stamp)
        self._stamp = now
        self.in_flight += delta

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            loop, fut = self._waiters.popleft()
            if fut.done():
                continue
            self._add(1)
            loop.call_soon_threadsafe(self._hand_over, fut)

    def _hand_over(self, fut: asyncio.Future) -> None:
        if fut.done():  # cancelled between wake-up and hand-over: give the slot back
            self.release()
        else:
            fut.set_result(None)


class KneeSearch:
    """The concurrency limit for an endpoint that publishes no limits, from one throughput
    measurement (requests/s) per round at the current limit.

    It looks for the knee, the fewest requests in flight that get the endpoint's full throughput.
    A reference round, then 25% more in flight, climbing on while throughput grows by at least
    GAIN of the proportional gain; a step that fails gets one more step up, compared with the same
    reference, so one flat or noisy round does not end a climb. If the first step up gained
    nothing the knee may lie lower: down by 20% while throughput holds. It then operates HEADROOM
    above the knee (at least two requests above it, where one more in flight is a big step) and
    searches again from the knee after RESEARCH_ROUNDS rounds (the endpoint or the request mix may
    change), or after two when the last search moved it (a noisy round can stop a search short).

    An overload (429/503) lowers the limit by OVERLOAD_DECREASE and caps it there; each round
    after raises the cap by ~6% up to just below where the overload happened, then by one every
    RESEARCH_ROUNDS rounds, so a stray 503 does not ratchet the limit down for good and a full
    queue is not hit again soon.
    """

    def __init__(self, start: int, ceiling: int):
        self.ceiling = ceiling
        self.limit = max(1, min(start, ceiling))
        self.cap = self._overloaded_at = ceiling
        self._capped_rounds = 0
        self.knee: int | None = None
        self.phase = "measure"  # measure → up (→ up ...) [→ down (→ down ...)] → operate
        self._ref = (self.limit, 0.0)  # (limit, rate) the running probe is compared with
        self._climbed = self._looked_ahead = False
        self._rounds = 0  # rounds operated since the last search
        self._research_after = RESEARCH_ROUNDS
        self._searched_from = self.limit

    def round(self, rate: float) -> int:
        """A round at `self.limit` served `rate` requests/s; returns the limit for the next one."""
        n, (ref_n, ref_rate) = self.limit, self._ref
        self._relax_cap()
        if self.phase == "measure":
            self._ref, self._climbed, self._searched_from = (n, rate), False, n
            return self._up(n)
        if self.phase == "up":
            if rate >= ref_rate * (1 + GAIN * (n / ref_n - 1)):  # the extra requests paid: climb on
                self._ref, self._climbed, self._looked_ahead = (n, rate), True, False
                return self._up(n)
            if not self._looked_ahead and (target := self._step_up(n)):
                self._looked_ahead = True  # a flat step (or a noisy round): look one step further
                return self._go("up", target)
            return self._settle(ref_n) if self._climbed else self._down(ref_n)
        if self.phase == "down":
            if rate >= ref_rate * (1 - GAIN * (1 - n / ref_n)):  # fewer cost nothing: they queued
                self._ref = (n, rate)
                return self._down(n)
            return self._settle(ref_n)
        self._rounds += 1
        if self._rounds >= self._research_after and self.knee is not None:
            return self._go("measure", self.knee)
        return self._go("operate", self._operating())

    def overloaded(self) -> int:
        """The endpoint refused work at this limit: lower it and cap it there. The knee found (or
        climbed to) stands, at most at the lowered limit; with none yet, it is searched for from
        there."""
        lowered = max(1, min(self.limit - 1, math.floor(self.limit * OVERLOAD_DECREASE)))
        knee = self._ref[0] if self.phase == "up" and self._climbed else self.knee
        self.cap, self._overloaded_at, self._capped_rounds = lowered, self.limit, 0
        self._rounds, self._searched_from = 0, lowered
        if knee is None:
            return self._go("measure", lowered)
        self.knee = min(knee, lowered)
        return self._go("operate", lowered)

    def _relax_cap(self) -> None:
        """An overload's cap wears off: fast up to just below where it happened, slowly beyond."""
        self._capped_rounds += 1
        if self.cap + 1 < self._overloaded_at:
            self.cap = min(self._overloaded_at - 1, self.cap + max(1, self.cap // 16))
        elif self._capped_rounds >= RESEARCH_ROUNDS:
            self.cap, self._capped_rounds = min(self.ceiling, self.cap + 1), 0

    def _step_up(self, n: int) -> int | None:
        """25% more, or None where the cap leaves no room for a whole step (smaller are noise)."""
        target = max(n + 1, round(n * PROBE_UP))
        return target if target <= min(self.cap, self.ceiling) else None

    def _up(self, n: int) -> int:
        self._looked_ahead = False
        if target := self._step_up(n):
            return self._go("up", target)
        return self._settle(n) if self._climbed else self._down(n)

    def _down(self, n: int) -> int:
        target = max(1, min(n - 1, round(n * PROBE_DOWN)))
        return self._settle(n) if target >= n else self._go("down", target)

    def _settle(self, knee: int) -> int:
        # a search that moved the knee may not have gone all the way (one noisy round stops it)
        self._research_after = RESEARCH_ROUNDS if knee == self._searched_from else 2
        self.knee, self._rounds = knee, 0
        return self._go("operate", self._operating())

    def _operating(self) -> int:
        knee = self.knee or self.limit
        return max(1, min(self.cap, self.ceiling, max(knee + 2, math.ceil(knee * HEADROOM))))

    def _go(self, phase: str, limit: int) -> int:
        self.phase, self.limit = phase, limit
        return limit


class Limiter:
    """Admission control for one (endpoint, model): RPM/TPM buckets where limits are known (from
    the pool or `x-ratelimit-*` headers); otherwise adaptive concurrency, a KneeSearch fed with
    rounds of successes. `clock` (monotonic seconds) is for tests; pauses and buckets use real time.
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.requests = Bucket(limits.rpm) if limits.rpm else None
        self.tokens = Bucket(limits.tpm) if limits.tpm else None
        self.refunds = limits.refund_unused_tokens
        # Endpoints that publish limits get the full ceiling; the others start low and adapt.
        self.adaptive = not (limits.rpm or limits.tpm)
        start = limits.initial_concurrency if self.adaptive else limits.max_concurrency
        self.slots = AdaptiveSlots(min(start, limits.max_concurrency), limits.max_concurrency, clock)
        self.search = KneeSearch(self.slots.limit, limits.max_concurrency)
        self.paused_until = 0.0
        self._last_decrease = -math.inf
        self._lately = [0.0, 0.0, clock()]  # successes, refusals (decaying), when last decayed
        self._refused_since_decrease = 0
        self._excess_at_decrease = 0
        self._latency_avg = 0.0
        # A round: skip the replies of requests admitted under the previous limit (at the start,
        # the first wave, which found the endpoint idle), then measure successes.
        self._skip = self.slots.limit
        self._measured = 0
        self._latency_sum = 0.0
        self._round_start = (clock(), 0.0)  # (time, slots.area()) when measuring began

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
        """Release the slot; refund unused tokens; a success (`latency` set) feeds the round."""
        self.slots.release()
        with self._lock:
            if used is not None and self.refunds and self.tokens and used < reserved:
                self.tokens.refund(reserved - used, time.monotonic())
            if latency is None or not self.adaptive:
                return
            self._decay()[0] += 1
            self._latency_avg = 0.9 * self._latency_avg + 0.1 * latency if self._latency_avg else latency
            if self._skip:
                self._skip -= 1
                if not self._skip:
                    self._restart_round()
                return
            self._measured += 1
            self._latency_sum += latency
            if self._measured >= max(ROUND_SUCCESSES, 2 * self.slots.limit):
                self._end_round()

    def _end_round(self) -> None:
        """Throughput by Little's law (average in flight / average latency), if the limit bound."""
        now, area = self._clock(), self.slots.area()
        start, start_area = self._round_start
        in_flight = (area - start_area) / (now - start) if now > start else 0.0
        latency = self._latency_sum / self._measured
        limit = self.slots.limit
        if in_flight >= SATURATED * limit and latency > 0:
            self._set_limit(self.search.round(in_flight / latency))
        else:  # too few requests to fill the limit: the round says nothing about the endpoint
            self._restart_round()

    def _set_limit(self, limit: int) -> None:
        if limit != self.slots.limit:
            self._skip = self.slots.in_flight  # their replies reflect the old limit
            self.slots.resize(limit)
        if not self._skip:
            self._restart_round()
        else:
            self._measured, self._latency_sum = 0, 0.0

    def _restart_round(self) -> None:
        self._measured, self._latency_sum = 0, 0.0
        self._round_start = (self._clock(), self.slots.area())

    def _decay(self) -> list[float]:
        """The recent success and refusal counts, decayed with a time constant of
        REFUSAL_WINDOW_S or two latencies, whichever is longer."""
        lately, now = self._lately, self._clock()
        keep = math.exp(-(now - lately[2]) / max(REFUSAL_WINDOW_S, 2 * self._latency_avg))
        lately[0], lately[1], lately[2] = lately[0] * keep, lately[1] * keep, now
        return lately

    def overloaded(self, retry_after: float | None) -> None:
        """A 429/503 came back: stop admitting for `retry_after`; where no rate limits are known
        and refusals are more than stray faults (REFUSAL_SHARE), lower the concurrency, once per
        burst. With known limits the buckets, drained here, do the pacing."""
        now = time.monotonic()
        with self._lock:
            for bucket in (self.requests, self.tokens):
                if bucket:
                    bucket.drain(now)
            if retry_after:
                self.paused_until = max(self.paused_until, now + retry_after)
            if not self.adaptive:
                return
            lately = self._decay()
            lately[1] += 1
            self._refused_since_decrease += 1
            if lately[1] < max(REFUSALS_MIN, REFUSAL_SHARE * lately[0]):
                return  # stray refusals among successes
            # One decrease per burst: the requests in flight above the lowered limit may still be
            # refused; more refusals than that mean requests sent since are refused too.
            clock = lately[2]
            if (clock - self._last_decrease > max(1.0, self._latency_avg)
                    or self._refused_since_decrease > self._excess_at_decrease):
                self._last_decrease, self._refused_since_decrease = clock, 0
                self._set_limit(self.search.overloaded())
                self._excess_at_decrease = max(0, self.slots.in_flight - self.slots.limit)

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


_LIMITERS: dict[tuple, Limiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(base_url: str, api_model: str, limits: Limits, account: str = "") -> Limiter:
    """The process-wide Limiter for (endpoint URL, api model, account, configured limits): limits
    are per model per account, and `account` (a fingerprint of the API key, never the key) keeps
    two keys apart; two pools configuring different limits for one endpoint get a limiter each
    rather than silently sharing whichever was made first."""
    key = (base_url, api_model, account, tuple(sorted(limits.model_dump().items())))
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = Limiter(limits)
        return _LIMITERS[key]
