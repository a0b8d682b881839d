"""The journal shared through the lake: what one machine paid for is a journal hit on another,
and a process killed at any moment loses at most the replies of its last segment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tasks.adapters.lake import Lake
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import SEGMENTS, Journal, LakeMirror
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig

REPO = Path(__file__).resolve().parents[2]


def pool(base_url: str, concurrency: int = 16) -> PoolConfig:
    return PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "limits": {"max_concurrency": concurrency,
                                                              "initial_concurrency": concurrency}}},
        "models": {"m": {"endpoint": "sim", "sampling": {"max_tokens": 64}}}})


def asks(n: int) -> list[ChatRequest]:
    return [ChatRequest(model="m", messages=({"role": "user", "content": f"question {i}?"},))
            for i in range(n)]


def complete(gateway: Gateway, requests: list[ChatRequest]):
    async def go():
        try:
            return await gateway.complete_all(requests)
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def test_what_one_machine_paid_for_is_a_journal_hit_on_another_sharing_the_lake(make_simulator, tmp_path):
    sim = make_simulator("unlimited")
    lake = Lake(str(tmp_path / "lake"))
    first = Journal(tmp_path / "a" / "journal.sqlite")
    mirror_a = LakeMirror(first, lake, interval_s=3600)
    paid = complete(Gateway(pool(sim.base_url), first, {}), asks(20))
    segment = mirror_a.flush()
    assert segment and lake.ls(SEGMENTS) == [segment] and mirror_a.flush() is None
    assert mirror_a.import_new() == 0  # its own segment is never read back

    second = Journal(tmp_path / "b" / "journal.sqlite")  # another machine: its own file
    mirror_b = LakeMirror(second, lake, interval_s=3600)
    assert mirror_b.import_new() == 20 and mirror_b.import_new() == 0
    again = complete(Gateway(pool(sim.base_url), second, {}), asks(20))
    assert sim.stats()["requests"] == 20 and all(r.from_journal for r in again)
    assert [r.text for r in again] == [r.text for r in paid]
    assert mirror_b.flush() is None  # imported rows are not landed again


def test_rows_whose_segment_could_not_land_go_in_the_next_one(make_simulator, tmp_path):
    sim = make_simulator("unlimited")
    journal = Journal(tmp_path / "a" / "journal.sqlite")
    blocked = tmp_path / "lake"
    blocked.write_text("a file where the lake's folder should be")
    mirror = LakeMirror(journal, Lake(str(blocked)), interval_s=3600)
    complete(Gateway(pool(sim.base_url), journal, {}), asks(5))
    try:
        mirror.flush()
        raise AssertionError("the segment landed in a file")
    except OSError:
        pass
    blocked.unlink()
    assert mirror.flush() is not None
    reader = LakeMirror(Journal(tmp_path / "b" / "journal.sqlite"), Lake(str(blocked)), interval_s=3600)
    assert reader.import_new() == 5


WORKER = """
import asyncio, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.adapters.test_journal_segments import asks, pool
from tasks.adapters.lake import Lake
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import Journal, LakeMirror
journal = Journal(Path({data!r}) / "journal.sqlite")
LakeMirror(journal, Lake({lake!r}), interval_s=0.3)
asyncio.run(Gateway(pool({url!r}, concurrency=4), journal, {{}}).complete_all(asks(400)))
"""


def test_a_process_killed_mid_run_loses_only_the_replies_after_its_last_segment(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"latency.ttft_s": 0.02, "latency.per_token_s": 0})
    lake = str(tmp_path / "lake")
    code = WORKER.format(repo=str(REPO), data=str(tmp_path / "a"), lake=lake, url=sim.base_url)
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 60
    while sim.stats()["requests"] < 150:
        assert proc.poll() is None and time.monotonic() < deadline, "the worker stopped early"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    sent = sim.stats()["requests"]
    assert sent < 400, "killed too late"

    other = LakeMirror(Journal(tmp_path / "b" / "journal.sqlite"), Lake(lake), interval_s=3600)
    landed = other.import_new()
    complete(Gateway(pool(sim.base_url), other.journal, {}), asks(400))
    repaid = sim.stats()["requests"] - 400
    assert repaid == sent - landed  # exactly what no segment held
    # at most a segment interval's replies (4 calls of ~0.02 s at a time: ~60 in 0.3 s) plus
    # the calls in flight; the rest was landed while the worker ran
    assert landed >= 100 and repaid <= 120, (sent, landed, repaid)
