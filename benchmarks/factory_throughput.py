"""factory_throughput: the whole UltraFeedback flow against an unlimited simulator in its own process.

Makes N synthetic prompts (default 2,000), runs the `ultrafeedback` flow in this process with a
pool whose limits do not bind, and prints one JSON line: end-to-end requests/s, CPU-seconds per
1,000 requests of this process (the Prefect server is a child process and not counted; neither
is the simulator), peak RSS, Prefect task runs per request, and the bare official client's CPU
per 1,000 requests against the same simulator in the same run, as the baseline: with its default
transport (httpx) and with aiohttp, the transport the gateway uses.

    python benchmarks/factory_throughput.py [--prompts 2000] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402

from benchmarks.factory import (  # noqa: E402
    cpu_s,
    peak_rss_mb,
    pool_file,
    recipe_file,
    run_flow,
    warm_up,
)
from benchmarks.simproc import simulator_process, stats  # noqa: E402

BARE_REQUESTS = 3000

async def bare_client(base_url: str, concurrency: int, aiohttp: bool) -> float:
    """CPU-seconds per 1,000 requests of the bare official client (same simulator, same run),
    with its default transport (httpx) or with aiohttp (the gateway's)."""
    extra = {"http_client": openai.DefaultAioHttpClient()} if aiohttp else {}
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0, **extra)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(
                model="gpt-4", max_tokens=1024, temperature=1,
                messages=[{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": f"Baseline {i}: explain a topic briefly."}])

    started = cpu_s()
    await asyncio.gather(*(one(i) for i in range(BARE_REQUESTS)))
    await client.close()
    return 1000 * (cpu_s() - started) / BARE_REQUESTS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, simulator_process("unlimited", []) as base_url:
        tmp_path = Path(tmp)
        warm_up()
        recipe = recipe_file(tmp_path, args.prompts)
        limits = {"max_concurrency": args.concurrency, "initial_concurrency": args.concurrency}
        pool = pool_file(tmp_path, {"local": (base_url, limits)})
        before = stats(base_url)["requests"]
        cpu0, wall0 = cpu_s(), time.monotonic()
        out = run_flow(tmp_path, recipe, pool)
        wall, cpu = time.monotonic() - wall0, cpu_s() - cpu0
        requests = stats(base_url)["requests"] - before
        rss = peak_rss_mb()
        bare = None if args.skip_baseline else asyncio.run(bare_client(base_url, 64, False))
        bare_aio = None if args.skip_baseline else asyncio.run(bare_client(base_url, 64, True))
    counts = out.counts
    flow_cpu = 1000 * cpu / requests
    task_runs = counts.blocks_run + 2  # blocks + intake + export
    print(json.dumps({
        "benchmark": "factory_throughput", "prompts": args.prompts, "requests": requests,
        "exported_completions": counts.exported_completions, "wall_s": round(wall, 2),
        "requests_per_s": round(requests / wall, 1),
        "flow_cpu_s_per_1000_requests": round(flow_cpu, 3),
        "bare_client_cpu_s_per_1000_requests": None if bare is None else round(bare, 3),
        "bare_client_aiohttp_cpu_s_per_1000_requests": (None if bare_aio is None
                                                        else round(bare_aio, 3)),
        "cpu_ratio_flow_to_bare": None if bare is None else round(flow_cpu / bare, 2),
        "cpu_ratio_flow_to_bare_aiohttp": (None if bare_aio is None
                                           else round(flow_cpu / bare_aio, 2)),
        "peak_rss_mb": rss, "task_runs": task_runs,
        "requests_per_task_run": round(requests / task_runs, 1),
    }))


if __name__ == "__main__":
    main()
