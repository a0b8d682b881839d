"""Two worker processes on one endpoint limited to 6,000 RPM share its budget through a Prefect
global rate limit: together they stay under the limit (≤ 1% 429s) and use most of it (≥ 90%).
The Prefect server runs on PostgreSQL, as in compose: on SQLite its answers to the budget's
calls stall for seconds at times (docs/rate-limits.md#shared-budgets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.adapters.llm.budget import SharedBudget, limit_name

REPO = Path(__file__).resolve().parents[2]
RPM = 6000
PER_WORKER = 1200

WORKER = """
import asyncio, json, os, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from tasks.adapters.llm.gateway import Gateway
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig
pool = PoolConfig.model_validate({{
    "endpoints": {{"sim": {{"base_url": {url!r}, "max_attempts": 8,
                           "limits": {{"rpm": {rpm}, "shared": {shared}, "max_concurrency": 64}}}}}},
    "models": {{"m": {{"endpoint": "sim", "sampling": {{"max_tokens": 16}}}}}}}})
asks = [ChatRequest(model="m", messages=({{"role": "user", "content": f"{name} {{i}}?"}},))
        for i in range({n})]
go = Path({go!r})
while not go.exists():
    time.sleep(0.01)
started = time.time()
async def main():
    gateway = Gateway(pool, None, {{}})
    try:
        return await gateway.complete_all(asks)
    finally:
        await gateway.aclose()
results = asyncio.run(main())
print(json.dumps({{"ok": sum(r.ok for r in results), "started": started, "ended": time.time()}}))
"""


def run_workers(sim, tmp_path: Path, prefect_api: str, shared: bool) -> dict[str, float]:
    """Two workers, started together: requests/s together over the whole run and in its middle
    (the 20th to the 80th percent of the requests, as the endpoint saw them: start-up and the
    last stragglers left out), 429s, requests the endpoint saw."""
    before = sim.stats()
    go = tmp_path / f"go-{shared}"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER.format(
        repo=str(REPO), url=sim.base_url, rpm=RPM, shared=shared, n=PER_WORKER,
        name=f"w{i}-{shared}", go=str(go))], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(2)]
    time.sleep(3)  # both imported and waiting
    go.touch()
    seen: list[tuple[float, int]] = []  # (time, requests the endpoint answered so far)
    while any(p.poll() is None for p in procs):
        seen.append((time.monotonic(), sim.stats()["requests"] - before["requests"]))
        time.sleep(0.1)
    outs = [json.loads(p.communicate(timeout=180)[0].strip().splitlines()[-1]) for p in procs]
    assert all(o["ok"] == PER_WORKER for o in outs), outs
    wall = max(o["ended"] for o in outs) - min(o["started"] for o in outs)
    after = sim.stats()
    sent = after["requests"] - before["requests"]
    (t20, n20), (t80, n80) = (next(s for s in seen if s[1] >= share * sent) for share in (0.2, 0.8))
    refused = sum(after["by_outcome"].get(k, 0) - before["by_outcome"].get(k, 0)
                  for k in ("rate_limit_requests", "rate_limit_tokens"))
    return {"whole": 2 * PER_WORKER / wall, "middle": (n80 - n20) / (t80 - t20),
            "refused": refused, "sent": sent}


@pytest.mark.slow
@pytest.mark.serial
def test_two_workers_sharing_a_6000_rpm_budget_stay_under_it_and_use_most_of_it(
        prefect_on_postgres, make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={"limits.rpm": RPM, "latency.ttft_s": 0.02,
                                                 "latency.per_token_s": 0})
    got = run_workers(sim, tmp_path, prefect_on_postgres, shared=True)
    limit = RPM / 60
    print(f"shared budget: {got['middle']:.1f} req/s of {limit:.0f} in the middle of the run, "
          f"{got['whole']:.1f} over all of it; {got['refused']} 429s of {got['sent']} requests")
    assert got["refused"] <= 0.01 * got["sent"], got
    # the bound, on the run's steady middle (the limit refills at 98%); start-up, each
    # process's first slice, and the stragglers at the end weigh on the whole run's rate
    assert got["middle"] >= 0.90 * limit, got
    assert got["whole"] >= 0.85 * limit, got


def test_budget_slices_are_a_quarter_second_of_the_limit_and_names_are_safe():
    assert SharedBudget("x", 6000).slice == 25 and SharedBudget("x", 10).slice == 1
    assert limit_name("openai", "gpt-4o/2024 08") == "ultraforge-rpm-openai-gpt-4o-2024-08"
