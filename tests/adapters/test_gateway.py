"""The gateway against the simulator over real HTTP (official openai client inside)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tasks.adapters.errors import ConfigError, FatalAPIError
from tasks.adapters.llm.gateway import Gateway, resolve_api_keys
from tasks.adapters.llm.journal import Journal
from tasks.adapters.llm.ratelimit import limiter_for
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig
from tasks.core.usage import usage_of

REPO = Path(__file__).resolve().parents[2]
FAST = {"latency.ttft_s": 0.02, "latency.per_token_s": 0, "latency.jitter": 0.2}


def make_pool(base_url: str, max_tokens: int = 512, timeout_s: float = 10, **limits) -> PoolConfig:
    return PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "limits": limits, "timeout_s": timeout_s}},
        "models": {"m": {"endpoint": "sim", "sampling": {"max_tokens": max_tokens},
                         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
    })


def requests(n: int, prefix: str = "q") -> list[ChatRequest]:
    return [ChatRequest(model="m", messages=({"role": "user", "content": f"{prefix} {i}?"},))
            for i in range(n)]


def run(gateway: Gateway, reqs: list[ChatRequest]):
    async def go():
        try:
            return await gateway.complete_all(reqs)
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def test_completes_everything_through_limits_and_faults(make_simulator, tmp_path):
    sim = make_simulator("tier3", overrides={**FAST, "limits.rpm": 1200, "faults.rate_429": 0.05,
                                             "faults.rate_5xx": 0.03, "faults.retry_after_s": 0.1})
    gateway = Gateway(make_pool(sim.base_url, rpm=1200, tpm=2_000_000), Journal(tmp_path / "j"), {})
    results = run(gateway, requests(150))
    stats = sim.stats()
    assert all(r.ok for r in results) and len({r.key for r in results}) == 150
    assert stats["by_outcome"]["ok"] == 150 and stats["ok_repeats"] == 0
    assert stats["by_outcome"]["injected_429"] > 0  # faults really happened and were retried
    assert sum(r.attempts for r in results) == stats["requests"]
    [usage] = usage_of("test", results, gateway.pool.cost)
    sim_model = stats["by_model"]["m"]
    assert usage.requests == 150
    assert usage.prompt_tokens == sim_model["prompt_tokens"]
    assert usage.completion_tokens == sim_model["completion_tokens"]
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    assert usage.cost_usd == pytest.approx(expected, rel=1e-6)
    # the 429s and retries the endpoint saw, and the span of the calls in time
    refused = sum(stats["by_outcome"].get(k, 0) for k in ("injected_429", "rate_limit_requests",
                                                          "rate_limit_tokens"))
    assert usage.rate_limited == refused > 0
    assert usage.retried == stats["requests"] - 150
    assert 0 < usage.last_done - usage.first_sent < 60


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_journal_hits_are_not_sent_again_and_metrics_tell_paid_from_replayed(simulator, tmp_path):
    paid0 = metric("ultraforge_llm_calls_total", model="m", endpoint="sim", outcome="paid")
    replay0 = metric("ultraforge_llm_calls_total", model="m", endpoint="sim", outcome="journal")
    tokens0 = metric("ultraforge_llm_tokens_total", model="m", kind="completion")
    journal = Journal(tmp_path / "j")
    first = run(Gateway(make_pool(simulator.base_url), journal, {}), requests(20))
    again = Gateway(make_pool(simulator.base_url), journal, {})
    second = run(again, requests(20))
    assert simulator.stats()["requests"] == 20
    assert all(r.from_journal for r in second)
    assert [r.text for r in first] == [r.text for r in second]
    [usage] = usage_of("test", second, again.pool.cost)
    assert usage.from_journal == 20 and usage.requests == 0
    assert metric("ultraforge_llm_calls_total", model="m", endpoint="sim", outcome="paid") == paid0 + 20
    assert metric("ultraforge_llm_calls_total", model="m", endpoint="sim",
                  outcome="journal") == replay0 + 20
    assert metric("ultraforge_llm_tokens_total", model="m", kind="completion") == tokens0 + sum(
        r.usage.completion_tokens for r in first)


def test_headers_correct_a_wrong_configured_limit(make_simulator, tmp_path):
    sim = make_simulator("tier3", overrides={**FAST, "limits.rpm": 600})
    pool = make_pool(sim.base_url, rpm=60000)
    gateway = Gateway(pool, Journal(tmp_path / "j"), {})
    results = run(gateway, requests(60))
    assert all(r.ok for r in results)
    learned = limiter_for(pool.endpoints["sim"].base_url, "m", pool.limits("m"))
    assert learned.requests.per_minute == 600  # taken from x-ratelimit-limit-requests


def test_retry_after_is_obeyed(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"faults.rate_429": 0.5, "faults.retry_after_s": 0.4})
    gateway = Gateway(make_pool(sim.base_url), Journal(tmp_path / "j"), {})

    async def timed(req):
        t0 = time.monotonic()
        result = await gateway.complete(req)
        return result, time.monotonic() - t0

    async def go():
        try:
            return await asyncio.gather(*(timed(r) for r in requests(24)))
        finally:
            await gateway.aclose()

    outcomes = asyncio.run(go())
    retried = [(r, dt) for r, dt in outcomes if r.attempts > 1]
    assert retried, "expected some injected 429s at a 50% rate"
    for result, elapsed in retried:
        assert result.ok
        assert elapsed >= 0.4 * (result.attempts - 1) * 0.95


def test_quota_exhaustion_stops_the_run_and_keeps_what_was_paid(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"limits.quota_tokens": 1500})
    journal = Journal(tmp_path / "j")
    gateway = Gateway(make_pool(sim.base_url, max_concurrency=4, rpm=100000), journal, {})
    with pytest.raises(FatalAPIError) as info:
        run(gateway, requests(200))
    assert info.value.endpoint == "sim" and "quota" in info.value.reason
    paid = sim.stats()["by_outcome"]["ok"]
    assert 0 < paid < 200 and len(journal) == paid


def test_request_too_large_is_fatal_without_retry(make_simulator, tmp_path):
    sim = make_simulator("tier1", overrides={**FAST, "limits.tpm": 1000})
    gateway = Gateway(make_pool(sim.base_url, max_tokens=5000), Journal(tmp_path / "j"), {})
    with pytest.raises(FatalAPIError, match="too large"):
        run(gateway, requests(1))
    assert sim.stats()["requests"] == 1


def test_hung_requests_time_out_and_are_retried(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"faults.hang": 0.3, "faults.hang_s": 3})
    gateway = Gateway(make_pool(sim.base_url, timeout_s=0.5), Journal(tmp_path / "j"), {})
    results = run(gateway, requests(20))
    assert all(r.ok for r in results)
    assert sim.stats()["by_outcome"]["hang"] > 0


@pytest.mark.serial
def test_adaptive_concurrency_finds_a_headerless_endpoints_capacity(make_simulator, tmp_path):
    """vLLM-like: no limits, no headers, 8 sequences at once; latency is the only signal."""
    sim = make_simulator("vllm", overrides={"latency.ttft_s": 0.05, "latency.per_token_s": 0,
                                            "latency.max_num_seqs": 8})
    pool = make_pool(sim.base_url, initial_concurrency=2, max_concurrency=128)
    gateway = Gateway(pool, Journal(tmp_path / "j"), {})
    results = run(gateway, requests(400))
    assert all(r.ok for r in results)
    limiter = limiter_for(pool.endpoints["sim"].base_url, "m", pool.limits("m"))
    assert limiter.adaptive
    assert 2 < limiter.slots.limit <= 24  # grew from 2, but backed off near the 8 real slots


def test_keys_come_from_the_environment_and_never_land(simulator, tmp_path, monkeypatch):
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": simulator.base_url, "api_key_env": "UF_TEST_KEY"}},
        "models": {"m": {"endpoint": "sim"}}})
    monkeypatch.delenv("UF_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="UF_TEST_KEY"):
        resolve_api_keys(pool)
    monkeypatch.setenv("UF_TEST_KEY", "sk-test-SECRET-0123456789")
    journal_dir = tmp_path / "j"
    results = run(Gateway(pool, Journal(journal_dir), resolve_api_keys(pool)), requests(5))
    assert all(r.ok for r in results)
    for path in journal_dir.parent.rglob("*"):
        if path.is_file():
            assert b"SECRET-0123456789" not in path.read_bytes()


def journaled_rows(db: Path) -> int:
    try:
        with closing(sqlite3.connect(db)) as con:
            return con.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_journal_survives_sigkill_and_no_paid_call_repeats(make_simulator, tmp_path):
    """Kill a gateway process mid-run, rerun it: the simulator's counters show what was paid."""
    sim = make_simulator("unlimited", overrides={"latency.ttft_s": 0.03, "latency.jitter": 0.5})
    n, concurrency = 400, 8
    cmd = [sys.executable, str(REPO / "tests/adapters/gateway_crash_worker.py"), sim.base_url,
           str(tmp_path), str(n), str(concurrency)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE)
    db = tmp_path / "journal.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and journaled_rows(db) < 100:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    journaled = journaled_rows(db)
    assert 100 <= journaled < n, "the kill should land mid-run"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    ok, from_journal = map(int, rerun.stdout.split()[1:3])
    stats = sim.stats()
    assert ok == n and from_journal >= journaled
    # every request paid once, plus at most the ones in flight when the process died and the
    # replies of the last commit window (docs/engine.md#exactly-once): slots free on arrival
    assert stats["ok_repeats"] <= 2 * concurrency
    assert stats["by_outcome"]["ok"] == n + stats["ok_repeats"]


@pytest.mark.parametrize("configured", [{"rpm": 1200}, {}])
def test_degenerate_azure_style_headers_do_not_stall_or_mislead_the_gateway(make_simulator, tmp_path,
                                                                           configured):
    """-1/0 header values and no retry-after: configured limits still pace; without them adaptive
    concurrency does."""
    sim = make_simulator("tier3", overrides={**FAST, "limits.rpm": 1200, "limits.degenerate_headers": True,
                                             "limits.retry_after": False, "limits.retry_after_ms": False})
    pool = make_pool(sim.base_url, **configured)
    gateway = Gateway(pool, Journal(tmp_path / "j"), {})
    t0 = time.monotonic()
    results = run(gateway, requests(60))
    assert all(r.ok for r in results) and time.monotonic() - t0 < 30
    limiter = limiter_for(pool.endpoints["sim"].base_url, "m", pool.limits("m"))
    assert limiter.paused_until < time.monotonic()  # "remaining 0, reset 0s" never paused it
    assert limiter.adaptive == (not configured)  # -1 limits were not taken as real limits


def test_a_request_on_its_way_for_another_call_is_awaited_not_paid_twice(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"latency.ttft_s": 0.3, "latency.per_token_s": 0})
    gateway = Gateway(make_pool(sim.base_url), Journal(tmp_path / "j"), {})
    same = requests(3, "shared")

    async def go():
        try:
            # two shards asking the same three things at once; then a call whose first asker
            # is cancelled before the answer: the second asks itself
            first, second = await asyncio.gather(gateway.complete_all(same), gateway.complete_all(same))
            paid.append(sim.stats()["by_outcome"]["ok"])
            lone = requests(1, "lone")
            leader = asyncio.create_task(gateway.complete_all(lone))
            await asyncio.sleep(0.05)
            follower = asyncio.create_task(gateway.complete_all(lone))
            await asyncio.sleep(0.05)
            leader.cancel()
            return first, second, await follower
        finally:
            await gateway.aclose()

    paid: list[int] = []
    first, second, lone = asyncio.run(go())
    assert paid == [3]
    assert [r.text for r in first] == [r.text for r in second] and all(r.ok for r in first + second)
    assert sorted(r.from_journal for r in first + second) == [False] * 3 + [True] * 3
    assert lone[0].ok and not lone[0].from_journal
    assert sim.stats()["requests"] == 3 + 2  # the cancelled leader's call, and the follower's
