"""docker-compose.yml, checked and exercised without a Docker engine.

`docker-compose config` validates the file; then the services' own commands, read from that
config, run as local processes: the simulator, the Prefect server (SQLite here instead of
Postgres, which needs no engine but is not what compose starts), the work-pool worker and the
deployment step; finally a deployment is triggered the way CI does (`prefect deployment run
--watch`) and must complete on the worker. The lake is a local directory here; the S3 path is
covered by the lake and flow tests on moto's S3 server.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.ops import ci_trigger_script
from tests.orchestration.test_pipeline import SMALL

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AUTH = "admin:test-pass"


def compose_config() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed (.ci/run installs it)")
        pytest.skip("docker-compose (Debian package) not installed; CI installs and runs this")
    out = subprocess.run([exe, "--env-file", "infra/env.example", "config"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    return yaml.safe_load(out.stdout)


def command(config: dict, service: str, **replace: str) -> list[str]:
    """The service's command as an argv, with `--flag value` pairs replaced."""
    cmd = config["services"][service]["command"]
    argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
    for flag, value in replace.items():
        i = argv.index(f"--{flag}")
        argv[i + 1] = value
    return argv


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 90, auth: tuple[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, auth=auth).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up")


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


@pytest.mark.slow
def test_compose_services_run_as_processes_and_a_deployment_completes(tmp_path):
    config = compose_config()
    procs: list[subprocess.Popen] = []
    sim_port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_HOME": str(tmp_path / "ph"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_API_AUTH_STRING": AUTH, "PREFECT_API_AUTH_STRING": AUTH,
           "PREFECT_SERVER_DATABASE_CONNECTION_URL":
               f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
           "PREFECT_API_URL": api}
    flow_env = {"ULTRAFORGE_APP_DIR": str(REPO), "ULTRAFORGE_DATA_DIR": str(tmp_path / "data"),
                "ULTRAFORGE_ENDPOINT_BASE_URL": f"http://127.0.0.1:{sim_port}/v1"}
    log = open(tmp_path / "services.log", "wb")  # noqa: SIM115 - closed in finally
    try:
        def start(argv: list[str], extra: dict | None = None) -> None:
            procs.append(subprocess.Popen(argv, cwd=REPO, env={**env, **(extra or {})},
                                          stdout=log, stderr=subprocess.STDOUT))

        start(command(config, "simulator", host="127.0.0.1", port=str(sim_port)))
        start(command(config, "prefect-server", host="127.0.0.1", port=str(api_port)))
        wait_for(f"http://127.0.0.1:{sim_port}/health")
        wait_for(f"{api}/health")
        assert httpx.get(f"{api}/flows/filter", timeout=5).status_code in (401, 405)  # auth on
        deploy = subprocess.run(command(config, "deployments"), cwd=REPO, env={**env, **flow_env},
                                capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        # the worker with compose's metrics settings: its flow-run children must not try to
        # serve metrics on its port too (the pool's job template turns that off)
        metrics_port, health_port = free_port(), free_port()
        worker_env = config["services"]["worker-1"]["environment"]
        start(command(config, "worker-1"), {
            **flow_env, "PREFECT_CLIENT_METRICS_ENABLED": worker_env["PREFECT_CLIENT_METRICS_ENABLED"],
            "PREFECT_CLIENT_METRICS_PORT": str(metrics_port),
            "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)})
        wait_for(f"http://127.0.0.1:{health_port}/health")
        wait_for(f"http://127.0.0.1:{metrics_port}/metrics")
        # triggered by the CI example's own step (infra/github/trigger-pipeline.yml)
        run = subprocess.run(["bash", "-ec", ci_trigger_script()], cwd=REPO, env={
            **env, "DEPLOYMENT": "pipeline/pipeline", "WATCH_TIMEOUT": "300",
            "GITHUB_RUN_ID": "local", "GITHUB_RUN_ATTEMPT": "1",
            "PARAMS": json.dumps({"params": SMALL})},
            capture_output=True, text=True, timeout=360)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        lake = tmp_path / "data" / "lake"
        for landed in ("exports/ultrafeedback/ultrafeedback.parquet", "exports/sft/ultrachat_200k",
                       "exports/dpo-ja/ultrafeedback_binarized/README.md", "reports/latest.html"):
            assert (lake / landed).exists(), f"the pipeline run did not land {landed}"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
