"""docker-compose.yml, checked and exercised without a Docker engine.

`docker-compose config` validates the file; then the services' own commands, read from that
config, run as local processes: the simulator, the Prefect server (SQLite here instead of
Postgres, which needs no engine but is not what compose starts; API auth on), the deployment
step and two work-pool workers; finally the pipeline deployment is triggered the way CI does
(`prefect deployment run --watch`), twice, with UltraFeedback split into parts that both
workers share, and one worker killed with its processes during the second run. The lake is a
local directory here; the S3 path is covered by the lake and flow tests on moto's S3 server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from tasks.adapters.lake import Lake
from tasks.adapters.warehouse import Warehouse
from tests.fixtures.factory import RESULT_IDS, fast_pool, raw_duplicates
from tests.fixtures.ops import ci_trigger_script, compose_config, free_port, wait_for
from tests.orchestration.test_pipeline import SMALL

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AUTH = "admin:test-pass"


def command(config: dict, service: str, **replace: str) -> list[str]:
    """The service's command as an argv, with `--flag value` pairs replaced."""
    cmd = config["services"][service]["command"]
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    for flag, value in replace.items():
        i = argv.index(f"--{flag}")
        argv[i + 1] = value
    return argv


def test_compose_file_declares_the_production_stack():
    config = compose_config()
    assert set(config["services"]) >= {"postgres", "prefect-server", "worker-1", "worker-2", "minio",
                                       "minio-init", "simulator", "deployments"}
    worker_env = config["services"]["worker-1"]["environment"]
    assert worker_env["ULTRAFORGE_LAKE_URL"].startswith("s3://")
    assert worker_env["ULTRAFORGE_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert worker_env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    server_env = config["services"]["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == worker_env["PREFECT_API_AUTH_STRING"]


def flow_runs(api: str, **filters) -> list:
    """Flow runs on the server at `api` (auth from the environment), by FlowRunFilter fields."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter

    with SyncPrefectClient(api, auth_string=AUTH) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(**filters))


def artifact_keys(api: str, flow_run_ids: list) -> set[str]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with SyncPrefectClient(api, auth_string=AUTH) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))
    return {a.key for a in found if a.key}


def family(api: str, root) -> list:
    """A flow run and every run under it (subflows and the parts they started)."""
    from prefect.client.schemas.filters import FlowRunFilterParentFlowRunId

    runs, frontier = [root], [root.id]
    while frontier:
        below = flow_runs(api, parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier))
        runs += below
        frontier = [r.id for r in below]
    return runs


def flow_run_ids_under(pid: int) -> dict[str, int]:
    """PREFECT__FLOW_RUN_ID → pid of every flow-run process below `pid` (a worker)."""
    out = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            run_id = child.environ().get("PREFECT__FLOW_RUN_ID")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if run_id:
            out[run_id] = child.pid
    return out


def kill_machine(pid: int) -> None:
    """SIGKILL a worker and every process below it, as when its machine goes down."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def rows_per_table(lake: Lake) -> dict[str, int]:
    """Rows landed in each UltraFeedback result table."""
    with Warehouse.in_memory(lake) as db:
        return {t: db.query(f"SELECT count(*) AS n FROM read_parquet('{lake.glob(t)}', "
                            "union_by_name = true)")[0]["n"] for t, _ in RESULT_IDS}


def segment_sizes(lake: Path, pid: int) -> list[int]:
    """Rows of each journal segment the process `pid` landed (`_journal/<host>-<pid>-...`)."""
    prefix = f"{socket.gethostname()}-{pid}-"
    return [pq.read_metadata(f).num_rows for f in sorted((lake / "_journal").glob(f"{prefix}*.parquet"))]


# ultrafeedback in parts for both runs; the second has 92 more prompts, in blocks of 4
PARTS = {"scale": {"parts": 2}}
RUN_1 = {**SMALL, "ultrafeedback": {"overrides": [*SMALL["ultrafeedback"]["overrides"],
                                                  "shard_prompts=2"], **PARTS}}
RUN_2 = {**SMALL, "ultrafeedback": {"overrides": ["sources.0.limit=100", "plan.n_models=2",
                                                  "shard_prompts=4"], **PARTS},
         "translate": {"sets": []}}
CONCURRENCY = 4  # per endpoint and process (the test's pool)


@pytest.mark.slow
def test_two_workers_share_a_pipeline_run_and_one_killed_mid_run_loses_nothing(tmp_path):
    """The compose services as processes: simulator, Prefect server (auth on), the work pool
    and deployments, two workers, each with its own data dir (journal) as on two machines and
    one shared lake. The pipeline is triggered by the CI example's own step, twice: the first
    run completes with its artifacts; in the second, the worker that does not run the pipeline
    is killed with its processes while its part of the UltraFeedback blocks runs, and the run
    still completes with complete, duplicate-free data, repaying at most one journal segment's
    calls plus those in flight."""
    config = compose_config()
    procs: list[subprocess.Popen] = []
    sim_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    lake = tmp_path / "lake"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_HOME": str(tmp_path / "ph"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_API_AUTH_STRING": AUTH, "PREFECT_API_AUTH_STRING": AUTH,
           "PREFECT_SERVER_DATABASE_CONNECTION_URL":
               f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
           "PREFECT_API_URL": api}
    flow_env = {"ULTRAFORGE_APP_DIR": str(REPO), "ULTRAFORGE_LAKE_URL": str(lake),
                "ULTRAFORGE_POOL_PATH": str(fast_pool(tmp_path, CONCURRENCY)),
                "ULTRAFORGE_ENDPOINT_BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
                # segments every 2 s (5 s in production) and a short grace for a lost part,
                # to keep the test short; workers poll every second (10 s by default)
                "ULTRAFORGE_JOURNAL_SEGMENT_S": "2", "ULTRAFORGE_PART_GRACE_S": "10",
                "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = open(tmp_path / "services.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        def start(argv: list[str], extra: dict | None = None) -> subprocess.Popen:
            proc = subprocess.Popen(argv, cwd=REPO, env={**env, **(extra or {})},
                                    stdout=log, stderr=subprocess.STDOUT)
            procs.append(proc)
            return proc

        # a steady 0.4 s a call, so that the second run lasts long enough to lose a worker in it
        start([*command(config, "simulator", host="127.0.0.1", port=str(sim_port),
                        preset="unlimited"), "--set", "latency.ttft_s=0.4",
               "--set", "latency.per_token_s=0"])
        start(command(config, "prefect-server", host="127.0.0.1", port=str(api_port)))
        wait_for(f"http://127.0.0.1:{sim_port}/health")
        wait_for(f"{api}/health")
        assert httpx.get(f"{api}/flows/filter", timeout=5).status_code in (401, 405)  # auth on
        deploy = subprocess.run(command(config, "deployments"), cwd=REPO,
                                env={**env, **flow_env, "ULTRAFORGE_DATA_DIR": str(tmp_path / "d0")},
                                capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        # the workers with compose's metrics settings (their flow-run children must not try to
        # serve metrics on the worker's port too: the pool's job template turns that off), two
        # flow runs at a time each, so that the pipeline's worker takes at most one part
        workers = {}
        worker_env = config["services"]["worker-1"]["environment"]
        for name in ("worker-1", "worker-2"):
            metrics_port, health_port = free_port(), free_port()
            workers[name] = start(command(config, name, limit="2"), {
                **flow_env, "ULTRAFORGE_DATA_DIR": str(tmp_path / name),
                "PREFECT_CLIENT_METRICS_ENABLED": worker_env["PREFECT_CLIENT_METRICS_ENABLED"],
                "PREFECT_CLIENT_METRICS_PORT": str(metrics_port),
                "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)})
            wait_for(f"http://127.0.0.1:{health_port}/health")
            wait_for(f"http://127.0.0.1:{metrics_port}/metrics")

        def sim_stats() -> dict:
            return httpx.get(f"http://127.0.0.1:{sim_port}/stats", timeout=10).json()

        def trigger(attempt: int, params: dict) -> subprocess.Popen:
            """The CI example's own step (infra/github/trigger-pipeline.yml)."""
            return subprocess.Popen(["bash", "-ec", ci_trigger_script()], cwd=REPO, env={
                **env, "DEPLOYMENT": "pipeline/pipeline", "WATCH_TIMEOUT": "400",
                "GITHUB_RUN_ID": "local", "GITHUB_RUN_ATTEMPT": str(attempt),
                "PARAMS": json.dumps({"params": params})},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        first = trigger(1, RUN_1)
        out = first.communicate(timeout=450)[0]
        assert first.returncode == 0, out[-4000:]
        for landed in ("exports/ultrafeedback/ultrafeedback.parquet", "exports/sft/ultrachat_200k",
                       "exports/dpo-ja/ultrafeedback_binarized/README.md", "reports/latest.html"):
            assert (lake / landed).exists(), f"the pipeline run did not land {landed}"
        [run_1] = flow_runs(api, name={"any_": ["ci-local-1"]})
        runs = family(api, run_1)
        parts = [r for r in runs if "-part-" in r.name]
        # a part that starts after the parent has done every block is cancelled, not run
        assert len(parts) == 2 and {p.state.type.value for p in parts} <= {"COMPLETED", "CANCELLED"}
        assert {r.state.type.value for r in runs if r not in parts} == {"COMPLETED"}, runs
        keys = artifact_keys(api, [r.id for r in runs])
        assert {"ultrafeedback-summary", "report"} <= keys, keys
        assert ("ultrafeedback-part-summary" in keys) == any(p.state.is_completed() for p in parts)
        assert sim_stats()["ok_repeats"] == 0
        # the second run's 100 prompts are blocked anew, so the first run's 8 prompts' rows
        # land again under the new blocks (from the journal, unpaid): one more copy each
        relanded = rows_per_table(Lake(str(lake)))

        second = trigger(2, RUN_2)
        victim = None
        deadline = time.monotonic() + 240
        while victim is None:
            assert second.poll() is None, "the run ended before a part ran on the other worker"
            assert time.monotonic() < deadline, "no part ran on the other worker"
            pipeline_runs = flow_runs(api, name={"any_": ["ci-local-2"]})
            parts = {str(r.id) for r in flow_runs(api, tags={"all_": ["part"]})
                     if r.state and r.state.is_running()}
            for name, worker in workers.items():
                under = flow_run_ids_under(worker.pid)
                if pipeline_runs and str(pipeline_runs[0].id) in under:
                    continue  # the pipeline's own worker
                mine = {run_id: pid for run_id, pid in under.items() if run_id in parts}
                if any(segment_sizes(lake, pid) for pid in mine.values()):  # working, landing
                    victim = (name, mine)
            time.sleep(0.2)
        kill_machine(workers[victim[0]].pid)
        out = second.communicate(timeout=450)[0]
        assert second.returncode == 0, out[-4000:]

        [run_2] = flow_runs(api, name={"any_": ["ci-local-2"]})
        runs = family(api, run_2)
        states = {str(r.id): r.state.type.value for r in runs}
        assert {states[i] for i in victim[1]} == {"CRASHED"}, states  # lost with the worker
        others = {str(r.id): r.state.type.value for r in runs if str(r.id) not in victim[1]}
        assert set(others.values()) <= {"COMPLETED", "CANCELLED"}, states
        cancelled = [r.name for r in runs if others.get(str(r.id)) == "CANCELLED"]
        assert all("-part-" in name for name in cancelled), states  # only a part not needed
        table = pq.read_table(lake / "exports/ultrafeedback/ultrafeedback.parquet").to_pylist()
        assert len(table) == 100 and len({r["instruction"] for r in table}) == 100
        assert all(len(r["completions"]) == 2 and all(c["annotations"] and c["critique"]
                                                      for c in r["completions"]) for r in table)
        repaid = sim_stats()["ok_repeats"]
        sizes = {pid: segment_sizes(lake, pid) for pid in victim[1].values()}
        print(f"lost parts' segments (rows): {sizes}; calls repaid after the kill: {repaid}")
        assert raw_duplicates(Lake(str(lake))) == relanded  # nothing else landed twice
        # at most what each lost part paid after its last segment, and its calls in flight
        assert repaid <= sum(max(s, default=0) + CONCURRENCY for s in sizes.values()), (repaid, sizes)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
