"""gateway_overhead: what the gateway itself costs, against an unlimited zero-latency simulator.

Reports requests/s through the gateway (journal on, as in production) and CPU seconds per 1,000
requests of this process, next to the bare official client doing the same requests in the same
run. The simulator runs in its own process. Prints one JSON line.
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

from benchmarks.simproc import simulator_process  # noqa: E402
from tasks.adapters.llm.gateway import Gateway  # noqa: E402
from tasks.adapters.llm.journal import Journal  # noqa: E402
from tasks.core.chat import ChatRequest  # noqa: E402
from tasks.core.pool import PoolConfig  # noqa: E402

N = 3000
CONCURRENCY = 64


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Item {i}: say something short."}]


async def _measure(coro_factory) -> dict:
    cpu0, t0 = _cpu(), time.monotonic()
    ok = await coro_factory()
    elapsed, cpu = time.monotonic() - t0, _cpu() - cpu0
    return {"ok": ok, "req_per_s": round(N / elapsed, 1), "cpu_s_per_1000": round(1000 * cpu / N, 3)}


async def gateway_run(base_url: str) -> dict:
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url,
                              "limits": {"max_concurrency": CONCURRENCY,
                                         "initial_concurrency": CONCURRENCY}}},
        "models": {"m": {"endpoint": "sim", "sampling": {"max_tokens": 64}}},
    })
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(pool, Journal(Path(tmp) / "j.sqlite"), {})

        async def go() -> int:
            rs = await gateway.complete_all(
                ChatRequest(model="m", messages=tuple(_messages(i))) for i in range(N))
            return sum(r.ok for r in rs)

        out = await _measure(go)
        await gateway.aclose()
    return out


async def bare_run(base_url: str) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> bool:
        async with sem:
            await client.chat.completions.create(model="m", messages=_messages(10**6 + i), max_tokens=64)
            return True

    async def go() -> int:
        return sum(await asyncio.gather(*(one(i) for i in range(N))))

    out = await _measure(go)
    await client.close()
    return out


def main() -> None:
    with simulator_process("unlimited", []) as base_url:
        bare = asyncio.run(bare_run(base_url))
        gateway = asyncio.run(gateway_run(base_url))
    print(json.dumps({"benchmark": "gateway_overhead", "requests": N, "concurrency": CONCURRENCY,
                      "gateway": gateway, "bare_openai_client": bare,
                      "cpu_overhead_ratio": round(gateway["cpu_s_per_1000"] / bare["cpu_s_per_1000"], 2)}))


if __name__ == "__main__":
    main()
