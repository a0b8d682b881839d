"""The live progress display of a long run on the command line (rich), one line per stage:
shards done of total, requests/s, 429s and cost so far, and the time left.

It shows only when stderr is a terminal (and ULTRAFORGE_PROGRESS is not 0): logs, CI and
tests see nothing of it. The figures are this process's, read from its Prometheus counters
(tasks/adapters/metrics.py), counted from the moment the stage's line appeared.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from prometheus_client import Counter
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from tasks.adapters import metrics

RATE_WINDOW_S = 5.0  # requests/s over the last few seconds
REFRESH_S = 0.5


def counter_total(counter: Counter, **match: str) -> float:
    """A counter's value summed over its label sets (those matching `match`)."""
    return sum(s.value for m in counter.collect() for s in m.samples
               if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in match.items()))


def _now() -> tuple[float, float, float, float]:
    """(time, paid calls, 429s, cost) of this process so far."""
    return (time.monotonic(), counter_total(metrics.CALLS, outcome="paid"),
            counter_total(metrics.RETRYABLE, status="429"), counter_total(metrics.COST))


class Board:
    """The display: a rich Progress whose lines carry the call figures as fields, refreshed
    twice a second by its own thread while any line is open."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7} req/s  {task.fields[refused]:>5} 429s  "
                       "${task.fields[cost]:<9}"), TimeRemainingColumn(),
            console=console, transient=False, auto_refresh=False)
        self._lock = threading.Lock()
        self._open: dict[TaskID, tuple[float, float, float, float]] = {}  # line → figures at its start
        self._recent: list[tuple[float, float, float, float]] = []

    def add(self, title: str, total: int) -> TaskID:
        with self._lock:
            if not self._open:
                self.progress.start()
                threading.Thread(target=self._loop, name="progress-board", daemon=True).start()
            task = self.progress.add_task(title, total=total, rate="-", refused=0, cost="0")
            self._open[task] = _now()
        self.tick()
        return task

    def update(self, task: TaskID, done: int, total: int) -> None:
        with self._lock:
            self.progress.update(task, completed=done, total=total)
            if done >= total:
                self._tick_locked()
                self._open.pop(task, None)
                if not self._open:
                    self.progress.stop()
                return
        self.tick()

    def tick(self) -> None:
        with self._lock:
            self._tick_locked()

    def _tick_locked(self) -> None:
        now = _now()
        self._recent = [s for s in self._recent if now[0] - s[0] <= RATE_WINDOW_S] + [now]
        first = self._recent[0]
        rate = (now[1] - first[1]) / (now[0] - first[0]) if now[0] > first[0] else 0.0
        for task, start in self._open.items():
            self.progress.update(task, rate=f"{rate:.1f}", refused=int(now[2] - start[2]),
                                 cost=f"{now[3] - start[3]:.4f}")
        self.progress.refresh()

    def _loop(self) -> None:
        while True:
            time.sleep(REFRESH_S)
            with self._lock:
                if not self._open:
                    return
                self._tick_locked()


_BOARD: Board | None = None
_BOARD_LOCK = threading.Lock()


def board() -> Board | None:
    """The process's display, or None when stderr is not a terminal (or it is turned off)."""
    global _BOARD
    if os.environ.get("ULTRAFORGE_PROGRESS", "1") == "0" or not sys.stderr.isatty():
        return None
    with _BOARD_LOCK:
        if _BOARD is None:
            _BOARD = Board(Console(stderr=True))
        return _BOARD
