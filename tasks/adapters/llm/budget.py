"""Per-model request budgets shared by every process, through Prefect global concurrency limits
with slot decay (docs/rate-limits.md#shared-budgets).

Each process paces itself with its own limiter (tasks/adapters/llm/ratelimit.py); with several
workers on one endpoint, each would take the whole RPM and together exceed it. A shared budget
makes them take turns: the endpoint's RPM is a Prefect rate limit (`slot_decay_per_second` =
RPM / 60), and each process takes it in slices of `SLICE_S` seconds' worth of requests, one API
call per slice, never one per request (each costs a round trip to the Prefect server:
docs/prefect.md#concurrency-limits). The slices a process holds are spent by its own requests,
one each.
"""

from __future__ import annotations

import asyncio
import re
import threading

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.exceptions import ObjectAlreadyExists

SLICE_S = 0.25  # a slice: a quarter second of the endpoint's requests
SAFETY = 0.98  # refill a little under the limit, as each process's own limiter paces
# the limit's size: a second of requests, the burst endpoints allow (docs/rate-limits.md#quantisation)
BURST_SLICES = 4
# a refused slice is asked again after this share of a slice's refill time, not after the
# server's Retry-After, which counts every refusal of every process and leaves the limit idle
RETRY_SHARE = 0.25


def limit_name(endpoint: str, api_model: str) -> str:
    """The global limit's name for one (endpoint, API model)."""
    return "ultraforge-rpm-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{endpoint}-{api_model}")


class SharedBudget:
    """One (endpoint, model)'s requests per minute, shared by all processes (module docstring).

    The next slice is asked for while a whole one is left, so that requests do not wait for the
    round trip; on each event loop one acquisition runs at a time."""

    def __init__(self, name: str, rpm: int):
        self.name, self.rpm = name, rpm
        self.slice = max(1, round(rpm / 60 * SLICE_S))
        self.retry_s = RETRY_SHARE * self.slice / (SAFETY * rpm / 60)
        self._left = 0
        self._lock = threading.Lock()
        self._fetching: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    async def take(self) -> None:
        """Wait until this process may send one more request."""
        while True:
            with self._lock:
                if self._left > 0:
                    self._left -= 1
                    if self._left < self.slice:
                        self._fetch_next()
                    return
            await asyncio.shield(self._fetch_next())  # a waiter cancelled leaves the fetch on

    def _fetch_next(self) -> asyncio.Task:
        loop = asyncio.get_running_loop()
        task = self._fetching.get(loop)
        if task is None or task.done():
            task = self._fetching[loop] = loop.create_task(self._fetch())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # seen by waiters
        return task

    async def _fetch(self) -> None:
        async with get_client() as client:
            await ensure_limit(client, self.name, self.rpm, self.slice)
            while True:
                try:
                    taken = await client.increment_concurrency_slots(
                        [self.name], self.slice, mode="rate_limit")
                except httpx.HTTPStatusError as exc:
                    if exc.response.status_code != 423:  # 423: the limit is spent for now
                        raise
                    await asyncio.sleep(self.retry_s)
                    continue
                if not taken.json():  # deleted since: made again on the next slice
                    _ENSURED.discard((self.name, self.rpm))
                    raise RuntimeError(f"global concurrency limit {self.name!r} disappeared")
                break
        with self._lock:
            self._left += self.slice


_ENSURED: set[tuple[str, int]] = set()


async def ensure_limit(client: PrefectClient, name: str, rpm: int, slice_: int) -> None:
    """Create the rate limit, or set its decay and size to these (once per process).

    Two processes may both find it missing and create it at once; the loser's create fails
    (the server logs its unique-name violation) and it then sets the limit the winner made."""
    if (name, rpm) in _ENSURED:
        return
    values = dict(limit=BURST_SLICES * slice_, slot_decay_per_second=SAFETY * rpm / 60)
    try:
        await client.upsert_global_concurrency_limit_by_name(name, **values)
    except (ObjectAlreadyExists, httpx.HTTPStatusError):
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(**values))
    _ENSURED.add((name, rpm))


_BUDGETS: dict[str, SharedBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_for(endpoint: str, api_model: str, rpm: int) -> SharedBudget:
    """The process-wide shared budget of one (endpoint, model)."""
    name = limit_name(endpoint, api_model)
    with _BUDGETS_LOCK:
        if name not in _BUDGETS or _BUDGETS[name].rpm != rpm:
            _BUDGETS[name] = SharedBudget(name, rpm)
        return _BUDGETS[name]
