"""gateway_adaptive: adaptive concurrency against a vLLM-like server that answers 503 when its queue is full.

Simulator (own process): the `vllm` preset (16 sequences at once, each slower the more run beside
it, ×3 with all slots busy) with a bounded waiting queue (`latency.max_waiting`, 503 beyond it).
Two clients send the same requests in the same run:

- the gateway with no configured limits (no rpm/tpm: adaptive concurrency from its defaults),
  journal on as in production;
- a baseline: `asyncio.Semaphore(16)` (the server's slot count, which the baseline is told)
  around the bare official client.

Capacity is the preset's: slots / (time_factor_under_load × per-request service time), with the
service time ttft_s + per_token_s × the run's mean completion tokens (both runs get identical
bodies, so identical completions). Reported per client: achieved throughput as a fraction of that
capacity, the 503 rate among requests sent, wall time and this process's CPU-seconds per 1,000
requests. Target: the gateway at ≥ 95% of capacity with ≤ 1% 503s. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simproc import simulator_process, stats  # noqa: E402
from infra.simulator import load_config  # noqa: E402
from tasks.adapters.llm.gateway import Gateway  # noqa: E402
from tasks.adapters.llm.journal import Journal  # noqa: E402
from tasks.adapters.llm.ratelimit import limiter_for  # noqa: E402
from tasks.core.chat import ChatRequest  # noqa: E402
from tasks.core.pool import PoolConfig  # noqa: E402

N, MAX_TOKENS, MAX_WAITING = 600, 64, 16
MODEL = "bench-vllm"
SIM = [f"latency.max_waiting={MAX_WAITING}"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: explain how a sourdough starter works."}]


def capacity(completion_tokens_per_request: float) -> float:
    """Requests per second the preset serves with every slot busy."""
    lat = load_config("vllm", overrides=SIM).latency
    service_s = (lat.ttft_s + lat.per_token_s * completion_tokens_per_request) * lat.time_factor_under_load
    return lat.max_num_seqs / service_s


async def _measured(base_url: str, go) -> dict:
    before, cpu0, t0 = stats(base_url), _cpu(), time.monotonic()
    ok = await go()
    elapsed, cpu = time.monotonic() - t0, _cpu() - cpu0
    after = stats(base_url)
    sent = after["requests"] - before["requests"]
    e503 = sum(after["by_outcome"][k] - before["by_outcome"][k] for k in ("queue_full", "error_503"))
    usage = after["by_model"][MODEL]["completion_tokens"] - before["by_model"].get(MODEL, {}).get(
        "completion_tokens", 0)
    oks = after["by_model"][MODEL]["ok"] - before["by_model"].get(MODEL, {}).get("ok", 0)
    return {"ok": ok, "sent": sent, "http_503": e503, "seconds": elapsed, "cpu": cpu,
            "tokens_per_ok": usage / max(1, oks)}


async def run_gateway(base_url: str) -> dict:
    pool = PoolConfig.model_validate({
        "endpoints": {"vllm": {"base_url": base_url}},  # no limits: adaptive concurrency
        "models": {MODEL: {"endpoint": "vllm", "sampling": {"max_tokens": MAX_TOKENS}}},
    })
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(pool, Journal(Path(tmp) / "j.sqlite"), {})

        limiter = limiter_for(base_url, MODEL, pool.limits(MODEL))
        trace: list[int] = []

        async def sample() -> None:  # the concurrency limit every 100 ms, for the report
            while True:
                trace.append(limiter.slots.limit)
                await asyncio.sleep(0.1)

        async def go() -> int:
            sampler = asyncio.create_task(sample())
            rs = await gateway.complete_all(
                ChatRequest(model=MODEL, messages=tuple(_messages(i))) for i in range(N))
            sampler.cancel()
            return sum(r.ok for r in rs)

        try:
            out = await _measured(base_url, go)
        finally:
            await gateway.aclose()
    return out | {"limit_mean": round(sum(trace) / max(1, len(trace)), 1),
                  "limit_range": [min(trace, default=0), max(trace, default=0)],
                  "limit_final": limiter.slots.limit}


async def run_baseline(base_url: str, slots: int) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench")  # default retries (2)
    sem = asyncio.Semaphore(slots)

    async def one(i: int) -> bool:
        async with sem:
            try:
                await client.chat.completions.create(model=MODEL, messages=_messages(i),
                                                     max_tokens=MAX_TOKENS)
                return True
            except openai.APIError:
                return False

    async def go() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(N))))

    try:
        return await _measured(base_url, go)
    finally:
        await client.close()


def _report(run: dict, cap: float) -> dict:
    return {"ok": run["ok"], "sent": run["sent"], "seconds": round(run["seconds"], 2),
            "ok_per_s": round(run["ok"] / run["seconds"], 2),
            "fraction_of_capacity": round(run["ok"] / run["seconds"] / cap, 3),
            "http_503": run["http_503"], "rate_503": round(run["http_503"] / max(1, run["sent"]), 4),
            "cpu_s_per_1000": round(1000 * run["cpu"] / N, 3),
            **{k: run[k] for k in ("limit_mean", "limit_range", "limit_final") if k in run}}


def main() -> None:
    slots = load_config("vllm").latency.max_num_seqs
    t0 = time.monotonic()
    with simulator_process("vllm", SIM) as base_url:
        gateway = asyncio.run(run_gateway(base_url))
        baseline = asyncio.run(run_baseline(base_url, slots))
    cap = capacity(gateway["tokens_per_ok"])  # identical bodies: the baseline's mean is the same
    gw, base = _report(gateway, cap), _report(baseline, cap)
    passed = gw["fraction_of_capacity"] >= 0.95 and gw["rate_503"] <= 0.01 and gw["ok"] == N
    print(json.dumps({
        "benchmark": "gateway_adaptive", "requests": N, "preset": "vllm", "slots": slots,
        "max_waiting": MAX_WAITING, "max_tokens": MAX_TOKENS,
        "completion_tokens_per_request": round(gateway["tokens_per_ok"], 1),
        "capacity_req_per_s": round(cap, 2), "gateway_adaptive": gw,
        f"baseline_semaphore{slots}": base, "wall_s": round(time.monotonic() - t0, 1),
        "target": "gateway >= 95% of capacity with <= 1% 503s", "passed": passed}))


if __name__ == "__main__":
    main()
