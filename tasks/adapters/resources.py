"""What a run works with, built once per process: settings, pool, lake, journal, gateway.

`Resources.build(settings)` reads the environment (Settings) and the pool once; flows and their
shard tasks then take everything from `current()`. The demo and the tests `activate` resources
of their own (a simulator's URL as endpoint override) instead of rewriting `os.environ`; a
worker process that nobody activated builds them from its environment on first use.

All model calls of the process run on one event loop in a background thread (`run`), whatever
thread the Prefect task runs in, so every shard shares one gateway, one HTTP client per
endpoint and one set of rate limiters (docs/engine.md#one-event-loop). `new_run()` gives each
flow run a fresh gateway: a fatal error stops that run's calls, not the next run's.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tasks.adapters import metrics
from tasks.adapters.lake import Lake
from tasks.adapters.llm.batch import BatchCollector, BatchRoute
from tasks.adapters.llm.gateway import Gateway, load_pool, resolve_api_keys
from tasks.adapters.llm.journal import Journal, LakeMirror, journal_at, mirror_at
from tasks.adapters.settings import Settings, launched_flow_run_id
from tasks.adapters.warehouse import Warehouse
from tasks.core.pool import PoolConfig
from tasks.core.tables import TableSpec

T = TypeVar("T")


class _Loop:
    """The process's event loop for model calls, in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="ultraforge-loop",
                                 daemon=True).start()
                self._loop = loop
            return self._loop


_LOOP = _Loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's event loop and wait for it (from any thread but that loop's).

    If the waiting thread is interrupted, the coroutine is cancelled too.
    """
    future = asyncio.run_coroutine_threadsafe(coro, _LOOP.get())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


@dataclass
class Resources:
    settings: Settings
    pool: PoolConfig
    lake: Lake
    journal: Journal
    mirror: LakeMirror | None = None  # the journal shared through the lake (None: not shared)
    _gateway: Gateway | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings | None = None) -> Resources:
        settings = settings or Settings()
        metrics.start_pushing(settings.pushgateway_url, launched_flow_run_id())
        lake, journal = Lake.from_settings(settings), journal_at(settings.journal)
        mirror = (mirror_at(journal, lake, settings.journal_segment_s)
                  if settings.journal_segment_s > 0 else None)
        if mirror is not None:
            mirror.import_new()  # what other machines paid for is a journal hit here
        return cls(settings=settings, pool=load_pool(settings), lake=lake, journal=journal,
                   mirror=mirror)

    @property
    def gateway(self) -> Gateway:
        """This run's gateway (made on first use; use it only on the loop of `run`)."""
        if self._gateway is None:
            gateway = Gateway(self.pool, self.journal, resolve_api_keys(self.pool))
            gateway.batches = BatchCollector(BatchRoute(gateway, self.lake))
            self._gateway = gateway
        return self._gateway

    def new_run(self) -> Resources:
        """These resources with a fresh gateway (the old one's clients are closed), and the
        journal segments other processes landed since imported."""
        if self._gateway is not None:
            run(self._gateway.aclose())
            self._gateway = None
        self.catch_up()
        return self

    def catch_up(self) -> None:
        """Import the journal segments other processes landed since the last import (a shard
        taken over from a lost worker then repays only what its last segment missed)."""
        if self.mirror is not None:
            self.mirror.import_new()

    def warehouse(self, *, read_only: bool = False) -> Warehouse:
        """The warehouse file (one read-write process at a time)."""
        return Warehouse(self.settings.warehouse, self.lake, read_only=read_only)

    def lake_db(self, *tables: TableSpec) -> Warehouse:
        """A private in-memory DuckDB with views of `tables` over the lake (no file lock)."""
        return Warehouse.in_memory(self.lake, tables)


_CURRENT: Resources | None = None
_ACTIVATED = False
_CURRENT_LOCK = threading.Lock()


def _replace(resources: Resources | None, activated: bool) -> None:
    global _CURRENT, _ACTIVATED
    old, _CURRENT, _ACTIVATED = _CURRENT, resources, activated
    if old is not None and old is not resources and old._gateway is not None:
        run(old._gateway.aclose())


def activate(resources: Resources | None) -> Resources | None:
    """Make `resources` what `current()` returns in this process (None: back to the
    environment's)."""
    with _CURRENT_LOCK:
        _replace(resources, resources is not None)
    return resources


def current() -> Resources:
    """The activated resources, else the environment's (rebuilt when the environment changed)."""
    with _CURRENT_LOCK:
        if _ACTIVATED:
            return _CURRENT
        settings = Settings()
        if _CURRENT is None or _CURRENT.settings != settings:
            _replace(Resources.build(settings), False)
        return _CURRENT
