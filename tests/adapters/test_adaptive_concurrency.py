"""Adaptive concurrency over real HTTP: the gateway, with no limits configured, against the
simulator's vLLM preset with a bounded queue (503 when full)."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import Journal
from tasks.adapters.llm.ratelimit import limiter_for
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig

SLOTS, N, MAX_TOKENS = 32, 800, 64


@pytest.mark.serial
def test_adaptive_concurrency_converges_near_the_slot_count_without_503_storms(make_simulator, tmp_path):
    # 32 sequences at once (the gateway starts at its default 16), 32 more may wait, then 503.
    sim = make_simulator("vllm", overrides={"latency.max_num_seqs": SLOTS, "latency.max_waiting": SLOTS})
    pool = PoolConfig.model_validate({
        "endpoints": {"vllm": {"base_url": sim.base_url}},  # no rpm/tpm: adaptive
        "models": {"m": {"endpoint": "vllm", "sampling": {"max_tokens": MAX_TOKENS}}},
    })
    gateway = Gateway(pool, Journal(tmp_path / "j"), {})
    limiter = limiter_for(sim.base_url, "m", pool.limits("m"))
    trace: list[int] = []

    async def go():
        async def sample():
            while True:
                trace.append(limiter.slots.limit)
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            results = await gateway.complete_all(
                ChatRequest(model="m", messages=({"role": "user", "content": f"Question {i}: why?"},))
                for i in range(N))
        finally:
            sampler.cancel()
            await gateway.aclose()
        return results, loop.time() - t0

    results, elapsed = asyncio.run(go())
    stats = sim.stats()
    assert all(r.ok for r in results) and limiter.adaptive
    lat = sim.config.latency
    tokens = stats["by_model"]["m"]["completion_tokens"] / stats["by_model"]["m"]["ok"]
    capacity = SLOTS / ((lat.ttft_s + lat.per_token_s * tokens) * lat.time_factor_under_load)
    assert N / elapsed >= 0.85 * capacity, (N / elapsed, capacity, trace)
    assert stats["by_outcome"]["queue_full"] <= 0.02 * stats["requests"]
    # it climbed from 16 and settled a little above the 32 slots, well short of the 64 that 503
    assert SLOTS <= statistics.median(trace[len(trace) // 2:]) <= 1.5 * SLOTS, trace
