"""The live display: a line per stage with shards done, requests/s, 429s, cost, time left;
nothing when stderr is not a terminal."""

from __future__ import annotations

import io

from rich.console import Console

from tasks.adapters import metrics
from tasks.console import Board, board


def test_a_stage_line_shows_shards_calls_429s_and_cost_counted_from_its_start():
    out = io.StringIO()
    display = Board(Console(file=out, force_terminal=True, width=140, color_system=None))
    metrics.CALLS.labels("m-console", "e", "paid").inc(7)  # before the stage: not its own
    line = display.add("ultrafeedback blocks: 4 shards", 4)
    metrics.CALLS.labels("m-console", "e", "paid").inc(30)
    metrics.RETRYABLE.labels("m-console", "e", "429").inc(3)
    metrics.COST.labels("m-console").inc(0.25)
    display.update(line, 2, 4)
    display.update(line, 4, 4)  # done: the line stays, the display stops
    text = out.getvalue()
    assert "ultrafeedback blocks: 4 shards" in text and "4/4" in text
    assert "    3 429s" in text and "$0.2500" in text and "req/s" in text


def test_there_is_no_display_when_stderr_is_not_a_terminal():
    assert board() is None  # pytest captures stderr
