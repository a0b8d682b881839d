"""Bounded fan-out of shard tasks: at most `limit` in flight, handled as each one finishes.

Submitting everything at once would queue every shard in the task runner and hold every future
(PREFECT.md §2); waves keep memory flat and let each finished shard land before the next starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect.futures import PrefectFuture, as_completed

from tasks.reporting import Progress

T = TypeVar("T")


def in_waves(submissions: Sequence[Callable[[], PrefectFuture]], limit: int, title: str,
             on_result: Callable[[Any], T] = lambda result: result) -> list[T]:
    """Call each submission (which submits one shard task), keeping at most `limit` running;
    pass every result through `on_result` as it arrives; one progress update per shard."""
    progress = Progress(f"{title}: {len(submissions)} shards")
    done: list[T] = []
    running: set[PrefectFuture] = set()

    def finish(future: PrefectFuture) -> None:
        running.discard(future)
        done.append(on_result(future.result()))
        progress.update(len(done), len(submissions))

    for submit in submissions:
        if len(running) >= limit:
            finish(next(as_completed(list(running))))
        running.add(submit())
    for future in as_completed(list(running)):
        finish(future)
    return done
