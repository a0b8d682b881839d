"""scale_out: one UltraFeedback job on one Prefect process worker against the same job split in
parts over two, and two workers sharing one endpoint's RPM, all with real processes.

A Prefect server (SQLite), the work pool and deployments (`ultraforge deploy`), process workers
(`prefect worker start`, each with its own data dir, so its own journal, as on separate
machines, and one shared lake) and the simulator each run in their own process; the job is
triggered as CI does (`prefect deployment run ... --watch`). Each scenario gets a fresh
simulator, fresh workers and a fresh lake and journals, so each pays for every call:

- one_worker: N synthetic prompts (default 2,000, as factory_throughput makes them) against the
  unlimited simulator, 1 worker, `scale.parts` = 1: the data plane is CPU-bound;
- two_workers: the same on 2 workers with `scale.parts` = 2: the parent run starts 2 runs of
  `ultrafeedback/part` and works through the blocks from the other end itself (tasks/scaleout.py);
- limited: fewer prompts, in smaller blocks, on 2 workers with parts = 2, against a simulator
  that refuses more than `--rpm` requests a minute, the pool's endpoint limited to the same RPM
  as one budget shared by every process (`shared: true`, a Prefect global rate limit:
  tasks/adapters/llm/budget.py). The simulator's limits and ours are per API model, so here
  every pool model is sent as one API model: one bucket, whose rate is the whole job's.

Reported per scenario: wall time (trigger → the run's end, Completed), busy time (first to last
request the simulator saw, sampled every 0.25 s), requests the simulator served, CPU seconds of
the workers and their flow-run processes (psutil: each worker's own CPU plus that of its reaped
children) per 1,000 requests, the server's CPU, peak RSS (VmHWM) of the largest flow-run
process, flow runs per worker, calls paid by the parent and by each part, and `ok_repeats`
(200s for a body already answered: 0 = no call paid twice, across parts too). Prints one JSON
line.

    python benchmarks/scale_out.py [--prompts 2000] [--limited-prompts 300] [--rpm 6000]
                                   [--prefect-db postgresql+asyncpg://user@host:port/db]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.factory import pool_file, recipe_file  # noqa: E402
from benchmarks.simproc import free_port, simulator_process, stats  # noqa: E402
from tasks.adapters.lake import Lake  # noqa: E402
from tasks.core.shards import paid_requests  # noqa: E402
from tasks.scaleout import read_part  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UNLIMITED = {"max_concurrency": 256, "initial_concurrency": 256}  # as factory_throughput
REFUSED = ("rate_limit_requests", "rate_limit_tokens")
# blocks of 8 prompts in the limited run: its few prompts in blocks of 32 would be fewer blocks
# than the parent runs at once (max_parallel_shards 8), so the parent would lease them all
# before its parts start and the parts would have nothing to send
LIMITED_SHARD_PROMPTS = 8
NOTE = ("All processes (server, simulator, both workers and their flow runs) share this "
        "machine's {cores} cores and the data plane is CPU-bound, so wall_ratio_1_over_2 cannot "
        "show the speed-up a second machine would give. Near 1 it shows that splitting a run "
        "into parts costs little and that the parts run concurrently (paid_by_parent_and_parts, "
        "flow_runs_per_worker); below 1 the split costs more than it spreads (each part is one "
        "more flow-run process to start: this dominates small jobs). On separate machines each "
        "worker would have its own cores.")


def wait_for(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    proc = psutil.Process(pid)
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
    proc.wait(timeout=15)


class Stack:
    """The Prefect server with the work pool and deployments registered; starts processes with
    its environment (own session, output to one log) and kills their trees on close."""

    def __init__(self, tmp: Path, database: str | None = None):
        self.tmp, self.port = tmp, free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PREFECT_HOME": str(tmp / "ph"), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_DATABASE_CONNECTION_URL":
                        database or f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
                    "ULTRAFORGE_APP_DIR": str(REPO)}
        self.log = open(tmp / "stack.log", "wb")  # noqa: SIM115 - closed in close()
        self.procs: list[subprocess.Popen] = []
        try:
            self.server = self.start([str(BIN / "prefect"), "server", "start",
                                      "--host", "127.0.0.1", "--port", str(self.port)])
            wait_for(f"{self.api}/health")
            deploy = subprocess.run([str(BIN / "ultraforge"), "deploy"], cwd=REPO, text=True,
                                    capture_output=True, timeout=600, env={
                                        **self.env, "ULTRAFORGE_DATA_DIR": str(tmp / "deploy")})
            if deploy.returncode:
                raise RuntimeError(f"ultraforge deploy: {(deploy.stderr or deploy.stdout)[-2000:]}")
        except BaseException:
            self.close()
            raise

    def start(self, argv: list[str], extra: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=REPO, env={**self.env, **(extra or {})},
                                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        kill_tree(proc)
        self.procs.remove(proc)

    def close(self) -> None:
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                self.stop(proc)
        self.log.close()

    def tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return (self.tmp / "stack.log").read_bytes()[-chars:].decode(errors="replace")


class Sampler(threading.Thread):
    """Every 0.25 s: the simulator's request count, and the peak RSS (VmHWM) of each flow-run
    process below each worker (by PREFECT__FLOW_RUN_ID)."""

    def __init__(self, base_url: str, workers: list[subprocess.Popen]):
        super().__init__(daemon=True)
        self.base_url, self.workers = base_url, workers
        self.requests: list[tuple[float, int]] = []
        self.runs: dict[str, tuple[int, float]] = {}  # flow run id → (worker index, peak MB)
        self._ids: dict[int, str | None] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            with contextlib.suppress(httpx.HTTPError):
                self.requests.append((time.monotonic(), stats(self.base_url)["requests"]))
            for w, worker in enumerate(self.workers):
                with contextlib.suppress(psutil.NoSuchProcess):
                    for child in psutil.Process(worker.pid).children(recursive=True):
                        with contextlib.suppress(psutil.Error, OSError):
                            if child.pid not in self._ids:
                                self._ids[child.pid] = child.environ().get("PREFECT__FLOW_RUN_ID")
                            run_id = self._ids[child.pid]
                            status = Path(f"/proc/{child.pid}/status").read_text()
                            if run_id and (hwm := re.search(r"VmHWM:\s+(\d+)", status)):
                                mb = max(int(hwm[1]) / 1024, self.runs.get(run_id, (w, 0))[1])
                                self.runs[run_id] = (w, mb)  # no VmHWM: a zombie

    def busy_s(self, before: int, after: int) -> float:
        """From the last sample before the first request to the first sample with them all."""
        start = max((t for t, n in self.requests if n <= before), default=self.requests[0][0])
        end = min((t for t, n in self.requests if n >= after), default=self.requests[-1][0])
        return end - start


def flow_run(api: str, run_id: str):
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api) as client:
        return client.read_flow_run(run_id)


def paid_by_parts(lake: Path, run_id: str, parts: int) -> list[int]:
    """Calls each part paid, from the shard summaries the parts landed for the parent
    (`runs/<flow>/<parent id>-<run count>/parts/<i, 3 digits>/`, tasks/scaleout.py)."""
    root = Lake(str(lake))
    runs = [n for n in root.ls("runs/ultrafeedback") if n.startswith(f"{run_id}-")]
    last = max(runs, key=lambda n: int(n.rsplit("-", 1)[1]), default=None)  # the last run count
    return [paid_requests(read_part(root, "ultrafeedback", last, i))
            for i in range(parts if last else 0)]


def scenario(stack: Stack, name: str, prompts: int, workers: int, parts: int, worker_limit: int,
             sim: list[str], limits: dict, one_api_model: bool = False, **recipe_values) -> dict:
    """One job on fresh workers, lake, journals and simulator; its numbers."""
    tmp = stack.tmp / name
    tmp.mkdir()
    recipe = yaml.safe_load(recipe_file(tmp, prompts, **recipe_values).read_text())
    with simulator_process("unlimited", sim) as base_url:
        pool = pool_file(tmp, {"local": (base_url, limits)})
        if one_api_model:
            values = yaml.safe_load(pool.read_text())
            for model in values["models"].values():
                model["api_model"] = "gpt-4"
            pool.write_text(yaml.safe_dump(values))
        flow_env = {"ULTRAFORGE_LAKE_URL": str(tmp / "lake"), "ULTRAFORGE_POOL_PATH": str(pool),
                    "ULTRAFORGE_ENDPOINT_BASE_URL": base_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
        procs = []
        try:
            for i in range(workers):
                health = free_port()
                procs.append(stack.start(
                    [str(BIN / "prefect"), "worker", "start", "--pool", "ultraforge", "--type", "process",
                     "--name", f"{name}-w{i + 1}", "--limit", str(worker_limit),
                     "--with-healthcheck", "--base-job-template", "infra/worker/process-pool.json"],
                    {**flow_env, "ULTRAFORGE_DATA_DIR": str(tmp / f"w{i + 1}"),
                     "PREFECT_WORKER_WEBSERVER_PORT": str(health)}))
                wait_for(f"http://127.0.0.1:{health}/health")
            before = stats(base_url)
            cpu0, server0 = sum(tree_cpu(p.pid) for p in procs), tree_cpu(stack.server.pid)
            sampler = Sampler(base_url, procs)
            sampler.start()
            params = {"params": {"recipe": recipe, "scale": {"parts": parts}}}
            started = time.time()
            trigger = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", "ultrafeedback/ultrafeedback", "--params",
                 json.dumps(params), "--watch", "--watch-timeout", "1800"],
                cwd=REPO, env=stack.env, capture_output=True, text=True, timeout=1900)
            if trigger.returncode:
                raise RuntimeError(f"{name}: the run did not complete:\n{trigger.stdout[-3000:]}\n"
                                   f"{trigger.stderr[-2000:]}\n--- services ---\n{stack.tail()}")
            run_id = re.search(r"UUID: ([0-9a-f-]{36})", trigger.stdout)[1]
            run = flow_run(stack.api, run_id)
            wall = run.end_time.timestamp() - started
            deadline = time.monotonic() + 60  # the flow-run processes exit and are reaped
            while any(psutil.Process(p.pid).children() for p in procs) and time.monotonic() < deadline:
                time.sleep(0.2)
            sampler.halt.set()
            sampler.join()
            cpu = sum(tree_cpu(p.pid) for p in procs) - cpu0
            server_cpu = tree_cpu(stack.server.pid) - server0
            after = stats(base_url)
        finally:
            for proc in procs:
                stack.stop(proc)
    requests = after["requests"] - before["requests"]
    refused = sum(after["by_outcome"][k] - before["by_outcome"][k] for k in REFUSED)
    by_parts = paid_by_parts(tmp / "lake", run_id, parts)
    busy = sampler.busy_s(before["requests"], after["requests"])
    return {
        "prompts": prompts, "workers": workers, "parts": parts, "wall_s": round(wall, 2),
        "busy_s": round(busy, 2), "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "busy_requests_per_s": round(requests / busy, 1),
        "refused_429": refused,
        # the parent's share is what the parts did not pay (blocks are leased: none paid twice)
        "paid_by_parent_and_parts": [requests - refused - sum(by_parts), *by_parts],
        "ok_repeats": after["ok_repeats"] - before["ok_repeats"],
        "worker_cpu_s": round(cpu, 1), "cpu_s_per_1000_requests": round(1000 * cpu / requests, 3),
        "server_cpu_s": round(server_cpu, 1),
        "peak_flow_rss_mb": round(max((mb for _, mb in sampler.runs.values()), default=0), 1),
        "flow_runs_per_worker": [sum(w == i for w, _ in sampler.runs.values())
                                 for i in range(workers)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--limited-prompts", type=int, default=300)
    ap.add_argument("--rpm", type=int, default=6000)
    # flow runs a worker takes at once: 2 so that the parent's worker takes at most one part and
    # both workers work (with 4 one worker could take the parent and both parts)
    ap.add_argument("--worker-limit", type=int, default=2)
    # the Prefect server's database (default: a SQLite file). Compose runs it on PostgreSQL; on
    # SQLite a shared budget's slot requests wait seconds behind the flow runs' own writes, so
    # `limited` measures the database rather than the budget (docs/rate-limits.md#shared-budgets)
    ap.add_argument("--prefect-db", default=None, metavar="URL",
                    help="e.g. postgresql+asyncpg://prefect@127.0.0.1:5432/prefect (an empty database)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), args.prefect_db)
        try:
            one = scenario(stack, "one_worker", args.prompts, 1, 1, args.worker_limit, [], UNLIMITED)
            two = scenario(stack, "two_workers", args.prompts, 2, 2, args.worker_limit, [],
                           UNLIMITED)
            limited = scenario(
                stack, "limited", args.limited_prompts, 2, 2, args.worker_limit,
                [f"limits.rpm={args.rpm}", "latency.ttft_s=0.02", "latency.per_token_s=0"],
                {"rpm": args.rpm, "shared": True, "max_concurrency": 64}, one_api_model=True,
                shard_prompts=LIMITED_SHARD_PROMPTS)
        finally:
            stack.close()
    limited["rpm"] = args.rpm
    limited["share_of_limit"] = round(limited["busy_requests_per_s"] / (args.rpm / 60), 3)
    print(json.dumps({
        "benchmark": "scale_out", "cores": os.cpu_count(),
        "prefect_db": (args.prefect_db or "sqlite").split(":", 1)[0].split("+", 1)[0],
        "one_worker": one, "two_workers": two,
        "wall_ratio_1_over_2": round(one["wall_s"] / two["wall_s"], 2),
        "cpu_ratio_2_over_1": round(two["cpu_s_per_1000_requests"]
                                    / one["cpu_s_per_1000_requests"], 2),
        "limited": limited, "note": NOTE.format(cores=os.cpu_count()),
    }))


if __name__ == "__main__":
    main()
