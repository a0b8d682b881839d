"""Pure parts of client-side pacing: Go durations, bucket reservations, adaptive concurrency."""

import asyncio
import heapq
import random

import pytest

from tasks.adapters.llm.ratelimit import (
    SAFETY,
    AdaptiveSlots,
    Bucket,
    KneeSearch,
    Limiter,
    limiter_for,
    parse_go_duration,
)
from tasks.core.pool import Limits


@pytest.mark.parametrize(("text", "seconds"), [
    ("12ms", 0.012), ("1s", 1.0), ("1.5s", 1.5), ("6m0s", 360.0), ("1m30s", 90.0),
    ("2h0m0s", 7200.0), ("500us", 0.0005),
])
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "12", "1x", "-1s", "1s garbage"])
def test_bad_go_durations_are_none(text):
    assert parse_go_duration(text) is None


def test_bucket_books_waits_at_the_paced_rate():
    bucket = Bucket(per_minute=600)  # 10/s before the safety margin
    rate = 10 * SAFETY
    now = bucket.stamp
    waits = [bucket.reserve(1, now) for _ in range(int(bucket.capacity) + 3)]
    assert waits[: int(bucket.capacity)] == [0.0] * int(bucket.capacity)
    # every reservation past the burst waits one more interval than the previous one
    tail = waits[int(bucket.capacity):]
    assert all(b - a == pytest.approx(1 / rate) for a, b in zip(tail, tail[1:], strict=False))


def test_bucket_refills_and_learns_a_new_limit():
    bucket = Bucket(per_minute=60)
    now = bucket.stamp
    bucket.drain(now)
    assert bucket.reserve(1, now + 10) == 0.0  # ten seconds of refill cover one request
    bucket.set_limit(6000)
    assert bucket.rate == pytest.approx(100 * SAFETY)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_refusals_lower_the_limit_gently_once_per_burst_but_stray_ones_do_not():
    clock = FakeClock()
    limiter = Limiter(Limits(initial_concurrency=20, max_concurrency=64), clock=clock)
    assert limiter.adaptive and limiter.slots.limit == 20

    async def send(successes: int = 0) -> None:  # then keep the limit full, as a backlog does
        for _ in range(successes):
            await limiter.admit(10)
            limiter.finish(reserved=10, used=10, latency=0.1)
        while limiter.slots.in_flight < limiter.slots.limit:
            await limiter.admit(10)

    def refused() -> int:  # a 503 for one of the requests in flight
        limiter.overloaded(retry_after=None)
        limiter.finish(reserved=10, used=None, latency=None)
        asyncio.run(send())
        return limiter.slots.limit

    asyncio.run(send(100))
    assert [refused() for _ in range(10)] == [20] * 10  # 10% stray faults: no overload
    clock.now += 60  # those successes are long past; from now on every reply is a refusal
    # ×0.9 (not halved) at the fifth refusal; the two in flight above 18 may be refused too
    # (the same burst); one more means requests sent since are refused as well
    assert [refused() for _ in range(7)] == [20, 20, 20, 20, 18, 18, 18]
    assert refused() == 16 and limiter.search.cap == 16


def knee_search_run(rate, start: int, rounds: int = 80, seed: int = 0, noise: float = 0.03):
    """Feed KneeSearch one noisy rate(limit) measurement per round; the limits it chose."""
    rng = random.Random(seed)
    search = KneeSearch(start, ceiling=256)
    limits = []
    for _ in range(rounds):
        limits.append(search.limit)
        search.round(rate(search.limit) * (1 + rng.uniform(-noise, noise)))
    return search, limits


def vllm_rate(slots: int, slowdown: float = 3.0, service_s: float = 0.3):
    """Requests/s with n in flight: up to `slots` run at once, each slower the more run (×slowdown
    with all busy); the rest queue, adding latency but no throughput."""
    def rate(n: int) -> float:
        running = min(n, slots)
        return running / (service_s * (1 + (slowdown - 1) * (running - 1) / max(1, slots - 1)))
    return rate


@pytest.mark.parametrize("slots", [4, 8, 16, 32, 64])
@pytest.mark.parametrize("start", [2, 16, 200])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knee_search_runs_a_little_above_the_slots_of_a_batching_server(slots, start, seed):
    rate = vllm_rate(slots)
    search, limits = knee_search_run(rate, start, seed=seed)
    late = limits[40:]
    # ≥ 95% of the server's throughput on average, searches included, with a bounded queue
    assert sum(rate(n) for n in late) / len(late) >= 0.95 * rate(slots)
    assert max(late) <= 2 * slots + 2
    assert search.knee is not None and slots // 2 <= search.knee <= 1.5 * slots + 1


def test_knee_search_without_batching_slowdown_and_on_a_one_slot_server():
    search, limits = knee_search_run(lambda n: min(n, 10) / 0.5, start=2)
    assert search.knee in range(8, 13) and max(limits[40:]) <= 16
    assert sum(min(n, 10) for n in limits[40:]) / 40 >= 9.5  # ≥ 95%, searches included
    search, limits = knee_search_run(lambda n: 2.0, start=16)  # one request at a time
    assert search.knee == 1 and max(limits[40:]) <= 3


def test_knee_search_follows_an_endpoint_that_grows_and_a_stray_overload_wears_off():
    small, big = vllm_rate(8), vllm_rate(32)
    search, _ = knee_search_run(small, start=8)
    assert search.limit <= 16
    rng, limits = random.Random(3), []
    for _ in range(80):  # the endpoint scales up: a later search climbs to its new knee
        limits.append(search.limit)
        search.round(big(search.limit) * (1 + rng.uniform(-0.03, 0.03)))
    assert search.knee >= 24 and sum(big(n) for n in limits[40:]) / 40 >= 0.95 * big(32)
    while search.phase != "operate":
        search.round(big(search.limit))
    before = search.limit
    search.overloaded()
    assert search.limit < before and search.cap < before
    for _ in range(6):
        search.round(big(search.limit))
    assert search.limit >= before - 1  # the cap wore off to just below where the 503 came...
    for _ in range(12):
        search.round(big(search.limit))
    assert search.limit >= before  # ...and then beyond: a one-off 503 is not a new ceiling


def simulate_vllm(limiter: Limiter, clock: FakeClock, n_requests: int, slots: int = 16,
                  max_waiting: int | None = None, service_s: float = 0.3, seed: int = 0,
                  stray_503: float = 0.0) -> dict:
    """Discrete-event run of `n_requests` through `limiter` (fake clock) against a vLLM-like
    server: `slots` sequences at once, each slower the more run (×3 with all busy), a FIFO queue,
    503 (5 ms later) when `max_waiting` are already waiting (and at random for a `stray_503`
    share of requests), retried 0.5 s later. Returns the throughput as a
    fraction of the server's capacity, the number of 503s and the time-averaged limit over the
    second half of the run."""
    rng = random.Random(seed)
    running = 0
    waiting: list[float] = []  # admission times
    events: list[tuple[float, int, float]] = []  # (time, 0 reply | 1 retry | 2 503, admitted)
    backlog, ok, refused, start = n_requests, 0, 0, clock.now
    limits: list[tuple[float, int]] = []  # (time, limit) at every reply

    def serve(admitted: float) -> None:
        nonlocal running
        slow = 1 + 2 * running / max(1, slots - 1)
        heapq.heappush(events, (clock.now + service_s * rng.uniform(0.9, 1.1) * slow, 0, admitted))
        running += 1

    async def go() -> None:
        nonlocal backlog, ok, refused, running
        while backlog or events:
            while backlog and limiter.slots.in_flight < limiter.slots.limit:
                await limiter.admit(100)
                backlog -= 1
                if rng.random() < stray_503:
                    heapq.heappush(events, (clock.now + 0.005, 2, 0.0))
                elif running < slots:
                    serve(clock.now)
                elif max_waiting is not None and len(waiting) >= max_waiting:
                    heapq.heappush(events, (clock.now + 0.005, 2, 0.0))  # a 503, 5 ms later
                else:
                    waiting.append(clock.now)
            clock.now, kind, admitted = heapq.heappop(events)
            if kind == 2:
                refused += 1
                limiter.overloaded(retry_after=None)
                limiter.finish(reserved=100, used=None, latency=None)
                heapq.heappush(events, (clock.now + 0.5, 1, 0.0))  # retried 0.5 s later
                continue
            if kind == 1:  # a refused request comes back
                backlog += 1
                continue
            running -= 1
            ok += 1
            limiter.finish(reserved=100, used=100, latency=clock.now - admitted)
            limits.append((clock.now, limiter.slots.limit))
            if waiting:
                serve(waiting.pop(0))

    asyncio.run(go())
    capacity = slots / (3 * service_s)
    late = limits[len(limits) // 2:]
    area = sum(n * (t2 - t1) for (t1, n), (t2, _) in zip(late, late[1:], strict=False))
    return {"fraction": ok / (clock.now - start) / capacity, "refused": refused, "ok": ok,
            "mean_limit": area / (late[-1][0] - late[0][0])}


@pytest.mark.parametrize(("start", "max_waiting"),
                         [(16, None), (2, None), (64, None), (16, 16), (2, 8), (64, 8)])
def test_the_limiter_finds_a_vllm_servers_capacity(start, max_waiting):
    """The whole adaptive path (rounds, Little's law, skipped transitions, KneeSearch) against a
    simulated server: full throughput, a short queue, (almost) no 503s."""
    clock = FakeClock()
    limiter = Limiter(Limits(initial_concurrency=start, max_concurrency=256), clock=clock)
    out = simulate_vllm(limiter, clock, 4000, max_waiting=max_waiting)
    assert out["fraction"] >= 0.95
    assert out["refused"] <= 0.01 * out["ok"] + (start > 32) * start  # + the first overshoot
    assert 16 <= out["mean_limit"] <= 26  # over the second half of the run: a short queue


def test_stray_503s_do_not_wear_the_limit_down():
    clock = FakeClock()
    limiter = Limiter(Limits(initial_concurrency=16, max_concurrency=256), clock=clock)
    out = simulate_vllm(limiter, clock, 4000, stray_503=0.1)
    assert out["refused"] > 300 and out["fraction"] >= 0.93 and out["mean_limit"] >= 16


def test_rounds_that_do_not_fill_the_limit_teach_nothing():
    clock = FakeClock()
    limiter = Limiter(Limits(initial_concurrency=16, max_concurrency=256), clock=clock)

    async def trickle() -> None:  # four at a time, never sixteen: the endpoint's size is unknown
        for _ in range(200):
            for _ in range(4):
                await limiter.admit(10)
            clock.now += 0.1
            for _ in range(4):
                limiter.finish(reserved=10, used=10, latency=0.1)

    asyncio.run(trickle())
    assert limiter.slots.limit == 16 and limiter.search.phase == "measure"


def test_headers_turn_off_adaptation_and_pause_when_exhausted():
    limiter = Limiter(Limits(initial_concurrency=4, max_concurrency=32))
    limiter.observe({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                     "x-ratelimit-reset-requests": "250ms", "x-ratelimit-limit-tokens": "-1"})
    assert not limiter.adaptive and limiter.slots.limit == 32
    assert limiter.requests is not None and limiter.requests.per_minute == 600
    assert limiter.tokens is None  # degenerate (Azure-style) values are ignored
    assert limiter.paused_until > 0


def test_slots_wake_waiters_across_event_loops_in_threads():
    import threading

    slots = AdaptiveSlots(limit=1, ceiling=1)
    order = []

    async def holder():
        await slots.acquire()
        order.append("held")
        await asyncio.sleep(0.2)
        slots.release()

    async def waiter():
        await asyncio.sleep(0.05)
        await slots.acquire()
        order.append("woken")
        slots.release()

    t = threading.Thread(target=lambda: asyncio.run(holder()))
    t.start()
    asyncio.run(waiter())
    t.join()
    assert order == ["held", "woken"] and slots.in_flight == 0


def test_a_429_with_known_limits_pauses_and_drains_but_keeps_concurrency():
    limiter = Limiter(Limits(rpm=600, max_concurrency=32))
    limiter.overloaded(retry_after=0.5)
    assert limiter.slots.limit == 32  # the buckets pace; halving slots would only lose throughput
    assert limiter.requests.level <= 0 and limiter.paused_until > 0


@pytest.mark.parametrize("handed_over", [False, True])
def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_back(handed_over):
    async def scenario():
        slots = AdaptiveSlots(limit=1, ceiling=1)
        await slots.acquire()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0)  # the waiter is queued
        slots.release()  # hands the slot to the waiter (via call_soon)...
        if handed_over:
            await asyncio.sleep(0)  # ...the hand-over ran: the waiter holds the slot...
        waiter.cancel()  # ...and is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.wait_for(slots.acquire(), timeout=1)  # the slot came back
        assert slots.in_flight == 1

    asyncio.run(scenario())


def test_limiters_are_keyed_by_their_configured_limits_too():
    url = "http://127.0.0.1:1/v1-limiter-keys"
    a = limiter_for(url, "m", Limits(rpm=600))
    assert limiter_for(url, "m", Limits(rpm=600)) is a  # equal limits: one shared limiter
    b = limiter_for(url, "m", Limits(rpm=1200))
    c = limiter_for(url, "m", Limits(max_concurrency=8, initial_concurrency=4))
    assert len({id(a), id(b), id(c)}) == 3
    assert (a.requests.per_minute, b.requests.per_minute) == (600, 1200)
    assert c.adaptive and c.slots.limit == 4 and c.slots.ceiling == 8
    assert limiter_for(url, "m", Limits(rpm=600), account="other-key") is not a
