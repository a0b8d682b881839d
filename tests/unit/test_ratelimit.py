"""Pure parts of client-side pacing: Go durations, bucket reservations, AIMD concurrency."""

import asyncio

import pytest

from tasks.adapters.ratelimit import SAFETY, AdaptiveSlots, Bucket, Limiter, parse_go_duration
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


def test_adaptive_limiter_halves_on_overload_and_grows_additively():
    limiter = Limiter(Limits(initial_concurrency=8, max_concurrency=64))
    assert limiter.adaptive and limiter.slots.limit == 8
    limiter.overloaded(retry_after=None)
    assert limiter.slots.limit == 4

    async def one_round():
        for _ in range(limiter.slots.limit):
            await limiter.admit(10)
            limiter.finish(reserved=10, used=10, latency=0.1)

    asyncio.run(one_round())
    assert limiter.slots.limit == 5  # +1 after a full window of successes


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
