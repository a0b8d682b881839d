"""gateway_throughput: 2,000 requests against a rate-limited simulator, gateway vs a naive client.

Simulator: rpm=6000, tpm=2,000,000, latency 0.5 s ± 20%, max_tokens 256. Target: the gateway's
ok-requests/s ≥ 95% of the RPM limit (100/s) with 429s ≤ 1% of requests sent. The baseline is a
plain asyncio.Semaphore(48) around the official client (its default retries on), measured in the
same run against the same simulator (separate model names, so separate buckets); a Semaphore(128)
run shows the same client when its concurrency exceeds what the limit allows.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simproc import simulator_process, stats  # noqa: E402
from tasks.adapters.llm.gateway import Gateway  # noqa: E402
from tasks.adapters.llm.journal import Journal  # noqa: E402
from tasks.core.chat import ChatRequest  # noqa: E402
from tasks.core.pool import PoolConfig  # noqa: E402

N, RPM, TPM, MAX_TOKENS = 2000, 6000, 2_000_000, 256
SIM = ["limits.rpm=6000", "limits.tpm=2000000", "latency.ttft_s=0.5", "latency.per_token_s=0",
       "latency.jitter=0.2"]


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: explain the rule of thirds in photography."}]


def _429s(before: dict, after: dict) -> int:
    keys = ("rate_limit_requests", "rate_limit_tokens")
    return sum(after["by_outcome"].get(k, 0) - before["by_outcome"].get(k, 0) for k in keys)


async def run_gateway(base_url: str) -> dict:
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "limits": {"rpm": RPM, "tpm": TPM}}},
        "models": {"bench-gw": {"endpoint": "sim", "sampling": {"max_tokens": MAX_TOKENS}}},
    })
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(pool, Journal(Path(tmp) / "j.sqlite"), {})
        before = stats(base_url)
        t0 = time.monotonic()
        results = await gateway.complete_all(
            ChatRequest(model="bench-gw", messages=tuple(_messages(i))) for i in range(N))
        elapsed = time.monotonic() - t0
        await gateway.aclose()
    after = stats(base_url)
    ok = sum(r.ok for r in results)
    sent = after["requests"] - before["requests"]
    return {"ok": ok, "sent": sent, "seconds": round(elapsed, 2), "ok_per_s": round(ok / elapsed, 1),
            "pct_of_rpm": round(100 * ok / elapsed / (RPM / 60), 1),
            "http_429": _429s(before, after), "pct_429": round(100 * _429s(before, after) / sent, 2)}


async def run_baseline(base_url: str, concurrency: int) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench")
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with sem:
            try:
                await client.chat.completions.create(model=f"bench-base-{concurrency}",
                                                     messages=_messages(i), max_tokens=MAX_TOKENS)
                return True
            except openai.APIError:
                return False

    before = stats(base_url)
    t0 = time.monotonic()
    done = await asyncio.gather(*(one(i) for i in range(N)))
    elapsed = time.monotonic() - t0
    await client.close()
    after = stats(base_url)
    ok, sent = sum(done), after["requests"] - before["requests"]
    return {"ok": ok, "failed": N - ok, "sent": sent, "seconds": round(elapsed, 2),
            "ok_per_s": round(ok / elapsed, 1), "pct_of_rpm": round(100 * ok / elapsed / (RPM / 60), 1),
            "http_429": _429s(before, after), "pct_429": round(100 * _429s(before, after) / sent, 2)}


def main() -> None:
    with simulator_process("tier3", SIM) as base_url:
        gateway = asyncio.run(run_gateway(base_url))
        baseline = asyncio.run(run_baseline(base_url, 48))
        # more concurrency than the limit allows: shows what 429s cost a client without pacing
        baseline_128 = asyncio.run(run_baseline(base_url, 128))
    passed = gateway["pct_of_rpm"] >= 95 and gateway["pct_429"] <= 1 and gateway["ok"] == N
    print(json.dumps({"benchmark": "gateway_throughput", "requests": N, "rpm": RPM, "tpm": TPM,
                      "gateway": gateway, "baseline_semaphore48": baseline,
                      "baseline_semaphore128": baseline_128,
                      "target": "ok/s >= 95% of RPM, 429s <= 1%", "passed": passed}))


if __name__ == "__main__":
    main()
