"""batch_route: 5,000 judge-sized requests through the batch route vs the online route, in one
client process each against one simulator process (its CPU is not billed to the client).

Batch: files of up to 2,000 lines (3 batches), "24h" compressed to 4 s, collected and journaled;
then a rerun of the same requests, which must make no call (all journal hits) and submit
nothing. Online: the same requests (another model name, so nothing is shared) through the
gateway with unlimited concurrency 256. Reports CPU-seconds per 1,000 requests in the client,
peak RSS of each client process, wall time, and the batch/online CPU ratio. Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simproc import simulator_process, stats  # noqa: E402

N = 5000
SIM = ["batch.window_s=4", "batch.validating_s=0.2", "batch.finalizing_s=0.2", "batch.progress=0.5"]
JUDGE = ("Rate the text below for helpfulness on a scale of 1 to 5, then give a rationale.\n\n"
         "Text 1: Solar panels convert sunlight into electricity through the photovoltaic effect.")


def _client(base_url: str, route: str, out) -> None:
    """One client process: N requests on `route`, then (batch) a rerun; its numbers to `out`."""
    from tasks.adapters.lake import Lake
    from tasks.adapters.llm.batch import BatchCollector, BatchRoute, BatchSettings
    from tasks.adapters.llm.gateway import Gateway
    from tasks.adapters.llm.journal import Journal
    from tasks.core.chat import ChatRequest
    from tasks.core.pool import PoolConfig

    model = f"judge-{route}"
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "limits": {"max_concurrency": 256,
                                                             "initial_concurrency": 256}}},
        "models": {model: {"endpoint": "sim", "api_model": "gpt-4", "sampling": {"max_tokens": 200}}},
    })
    requests = [ChatRequest(model=model, route=route, stage="annotation", messages=(
        {"role": "user", "content": f"{JUDGE} (case {i})"},)) for i in range(N)]
    with tempfile.TemporaryDirectory() as tmp:
        async def once() -> tuple[float, float, int]:
            gateway = Gateway(pool, Journal(Path(tmp) / "j.sqlite"), {})
            route_ = BatchRoute(gateway, Lake(str(Path(tmp) / "lake")),
                                BatchSettings(max_requests=2000, poll_s=0.1))
            gateway.batches = BatchCollector(route_)
            gateway.batches.configure(wait_s=120, linger_s=0.05, poll_s=0.1, retry="batch",
                                      max_resubmits=2)
            cpu0, t0 = time.process_time(), time.monotonic()
            try:
                results = await gateway.complete_all(requests)
            finally:
                await gateway.aclose()
            return time.process_time() - cpu0, time.monotonic() - t0, sum(r.ok for r in results)

        cpu, wall, ok = asyncio.run(once())
        rerun_cpu, rerun_wall, rerun_ok = asyncio.run(once()) if route == "batch" else (0, 0, 0)
    out.put({"route": route, "ok": ok, "wall_s": round(wall, 2),
             "cpu_s_per_1000": round(cpu / N * 1000, 3),
             "rerun_cpu_s_per_1000": round(rerun_cpu / N * 1000, 3), "rerun_ok": rerun_ok,
             "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})


def measure(base_url: str, route: str) -> dict:
    queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_client, args=(base_url, route, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result


def main() -> None:
    with simulator_process("unlimited", SIM) as base_url:
        online = measure(base_url, "online")
        batch = measure(base_url, "batch")
        sim = stats(base_url)["batch"]
    print(json.dumps({
        "benchmark": "batch_route", "requests": N, "online": online, "batch": batch,
        "batches_created": sim["batches_created"], "custom_id_repeats": sim["custom_id_repeats"],
        "cpu_ratio_batch_over_online": round(batch["cpu_s_per_1000"] / online["cpu_s_per_1000"], 2),
    }))


if __name__ == "__main__":
    main()
