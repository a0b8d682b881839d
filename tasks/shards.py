"""The shard engine every flow runs on (docs/engine.md).

A shard is one Prefect task run of a few hundred model calls. Its task gets only small values:
its stage, its key and the ids of its inputs. It reads its inputs from the lake itself, makes
its calls through the run's gateway on the process's event loop (tasks/adapters/resources.py),
lands its own rows, failures and usage, and returns a `ShardSummary`. So a shard can run in any
process that reaches the lake, and a flow never holds more than the summaries.

Claims: before doing any work a shard takes a lease on its key in the lake
(`_leases/<key>/<generation>`, created only if absent, so of two claimants exactly one wins).
The holder renews it while it works and releases it when done; a lease that is not renewed
expires, and the next claimant takes the next generation. A shard whose key is leased by someone
else waits until the lease is released or expires (at once when its holder was a process of
this host that is gone), then looks again: by then its work is usually landed and it pays for
nothing. Two runs of one recipe on one lake therefore never pay for the
same call twice, and a dead claimant's work is picked up after `LEASE_TTL_S`.

Retries: the gateway retries requests (tenacity); Prefect retries a whole shard once, later, for
trouble the gateway could not absorb, never after a fatal API error or a configuration error.
A retried shard only redoes what did not land.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import NamedTuple

from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed

from tasks.adapters.errors import ConfigError, FatalAPIError
from tasks.adapters.lake import Lake
from tasks.core.shards import ShardSummary
from tasks.reporting import Progress

LEASE_TTL_S = 60.0
LEASE_POLL_S = 0.5
HOST = socket.gethostname()
OWNER = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def retry_unless_fatal(task, task_run, state) -> bool:
    """Retry after transient trouble; never after a fatal API error or a configuration error.

    Prefect hands the condition a Failed state whose `data` is the exception, for sync and
    async tasks alike (calling `state.result()` on an async task's state returns a coroutine).
    """
    exc = state.data
    return isinstance(exc, Exception) and not isinstance(exc, FatalAPIError | ConfigError)


# Inputs are keys and ids: caching them buys nothing (the lake is the record of what is done)
# and hashing parameters is fragile (docs/prefect.md#caching).
SHARD_TASK = {"retries": 1, "retry_delay_seconds": 5, "retry_condition_fn": retry_unless_fatal,
              "cache_policy": NO_CACHE}


# -- leases ----------------------------------------------------------------------------------------

def _lease_dir(key: str) -> str:
    return f"_leases/{key}"


def _read_lease(lake: Lake, key: str, generation: str) -> dict:
    try:
        return json.loads(lake.read_bytes(f"{_lease_dir(key)}/{generation}"))
    except (FileNotFoundError, ValueError):
        return {"owner": "?", "expires": 0.0}


def _live(lease: dict) -> bool:
    """Whether a lease still holds: not expired, and not held by a dead process of this host
    (a crashed run's leases are taken over at once by the rerun on the same machine)."""
    if lease["expires"] <= time.time():
        return False
    host, _, rest = str(lease["owner"]).partition(":")
    pid = rest.split(":", 1)[0]
    if host == HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


class Claim(NamedTuple):
    """A lease taken: its generation, and whether the one before it was left unreleased by
    someone else (its holder died or was cut off, after paying for calls it may not have
    landed)."""

    generation: str
    taken_over: bool


def try_lease(lake: Lake, key: str, ttl: float = LEASE_TTL_S) -> Claim | None:
    """Take the lease on `key` if nobody holds a live one; None if held."""
    while True:
        generations = lake.ls(_lease_dir(key))
        taken_over = False
        if generations:
            latest = generations[-1]
            lease = _read_lease(lake, key, latest)
            if lease["owner"] != OWNER and _live(lease):
                return None
            taken_over = lease["owner"] != OWNER and lease["expires"] > 0
            nxt = f"{int(latest) + 1:08d}"
        else:
            nxt = f"{0:08d}"
        body = json.dumps({"owner": OWNER, "expires": time.time() + ttl}).encode()
        if lake.create_bytes(f"{_lease_dir(key)}/{nxt}", body):
            return Claim(nxt, taken_over)
        # someone created that generation first: look again


def _write_lease(lake: Lake, key: str, generation: str, expires: float) -> None:
    body = json.dumps({"owner": OWNER, "expires": expires}).encode()
    lake.write_bytes(f"{_lease_dir(key)}/{generation}", body)


@asynccontextmanager
async def claimed(lake: Lake, key: str, ttl: float = LEASE_TTL_S,
                  on_takeover: Callable[[], object] | None = None) -> AsyncIterator[float]:
    """Hold the lease on `key` for the body, renewing it; yields the seconds spent waiting for
    another claimant first (0.0 when the lease was free). The body should re-check what is
    missing: the other claimant may have landed it. `on_takeover` runs (in a thread) before the
    body when the last holder left the lease unreleased: the place to import the journal
    segments it landed, so that its calls are not paid again (docs/engine.md#journal-segments)."""
    started = time.monotonic()
    waited = 0.0
    while (claim := await asyncio.to_thread(try_lease, lake, key, ttl)) is None:
        await asyncio.sleep(LEASE_POLL_S)
        waited = time.monotonic() - started
    generation = claim.generation
    if on_takeover is not None and claim.taken_over:
        await asyncio.to_thread(on_takeover)

    # a renewal still writing in its thread when the body ends must not land after the release
    # (the lease would look live for another ttl): writes take turns, none follows the release
    writing = threading.Lock()
    released = False

    def write(expires: float, release: bool = False) -> None:
        nonlocal released
        with writing:
            if not released:
                _write_lease(lake, key, generation, expires)
                released = release

    async def renew() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            await asyncio.to_thread(write, time.time() + ttl)

    renewer = asyncio.create_task(renew())
    try:
        yield waited
    finally:
        renewer.cancel()
        await asyncio.to_thread(write, 0.0, True)


# -- fan-out ---------------------------------------------------------------------------------------

def run_shards(submissions: Sequence[Callable[[], PrefectFuture]], limit: int, title: str,
               on_done: Callable[[ShardSummary], object] | None = None) -> list[ShardSummary]:
    """Submit shard tasks keeping at most `limit` in flight; their summaries in finishing order
    (each also handed to `on_done` as it comes).

    A fatal error (or a configuration error) in any shard stops the fan-out at once: nothing more
    is submitted and the error is raised (the shards still running stop by themselves, since the
    run's gateway refuses every call after a fatal error). Any other shard failure is raised once
    the other shards are done, so what can land, lands.
    """
    progress = Progress(f"{title}: {len(submissions)} shards", len(submissions))
    if not submissions:
        progress.update(0, 0)  # nothing to do: the line closes at once
    done: list[ShardSummary] = []
    errors: list[BaseException] = []
    running: set[PrefectFuture] = set()
    pending = list(reversed(submissions))
    finished = 0
    while pending or running:
        while pending and len(running) < limit:
            running.add(pending.pop()())
        future = next(as_completed(list(running)))
        running.discard(future)
        finished += 1
        try:
            done.append(future.result())
            if on_done is not None:
                on_done(done[-1])
        except (FatalAPIError, ConfigError):
            raise
        except Exception as exc:
            errors.append(exc)
        progress.update(finished, len(submissions))
    if errors:
        raise errors[0]
    return done
