"""Per-model request budgets shared by every process, through Prefect global concurrency limits
with slot decay (docs/rate-limits.md#shared-budgets).

Each process paces itself with its own limiter (tasks/adapters/llm/ratelimit.py); with several
workers on one endpoint, each would take the whole RPM and together exceed it. A shared budget
makes them take turns: the endpoint's RPM is a Prefect rate limit (`slot_decay_per_second` =
RPM / 60), and each process takes it in slices of `SLICE_S` seconds' worth of requests, one API
call per slice, never one per request (Prefect serialises the acquisitions of a process and
each costs a round trip: docs/prefect.md#concurrency-limits). The slices a process holds are
spent by its own requests, one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading

from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectAlreadyExists

SLICE_S = 0.25  # a slice: a quarter second of the endpoint's requests
SAFETY = 0.98  # refill a little under the limit, as each process's own limiter paces
# the limit's size: a second of requests, the burst endpoints allow (docs/rate-limits.md#quantisation)
BURST_SLICES = 4


def limit_name(endpoint: str, api_model: str) -> str:
    """The global limit's name for one (endpoint, API model)."""
    return "ultraforge-rpm-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{endpoint}-{api_model}")


class SharedBudget:
    """One (endpoint, model)'s requests per minute, shared by all processes (module docstring).

    The next slice is asked for while half of the current one is left, so that requests do not
    wait for the round trip; on each event loop one acquisition runs at a time."""

    def __init__(self, name: str, rpm: int):
        self.name, self.rpm = name, rpm
        self.slice = max(1, round(rpm / 60 * SLICE_S))
        self._left = 0
        self._lock = threading.Lock()
        self._fetching: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    async def take(self) -> None:
        """Wait until this process may send one more request."""
        while True:
            with self._lock:
                if self._left > 0:
                    self._left -= 1
                    if self._left < self.slice / 2:
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
        await ensure_limit(self.name, self.rpm, self.slice)
        await rate_limit(self.name, occupy=self.slice, strict=True)
        with self._lock:
            self._left += self.slice


_ENSURED: set[tuple[str, int]] = set()


async def ensure_limit(name: str, rpm: int, slice_: int) -> None:
    """Create the rate limit, or set its decay and size to these (once per process; two
    processes creating it at once: the second finds it)."""
    if (name, rpm) in _ENSURED:
        return
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):  # created by another process meanwhile
            await client.upsert_global_concurrency_limit_by_name(
                name, BURST_SLICES * slice_, slot_decay_per_second=SAFETY * rpm / 60)
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
