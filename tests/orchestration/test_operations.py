"""Operations (docs/operations.md): the compose stack's shape, the Prometheus config and rules,
the CI trigger example, and monitoring run as local processes.

No Docker engine here: the shape is read from `docker-compose config`; Prometheus, the
Pushgateway, two worker-like metrics processes and a flow-run-like process run on loopback with
the commands and settings compose gives them, targets rewritten to 127.0.0.1. The real workers,
the real server and a real deployment run are tests/orchestration/test_services.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import REGISTRY

from tasks.adapters import metrics
from tasks.adapters.llm.gateway import Gateway
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig
from tests.fixtures.ops import (
    COMPOSE_YML,
    POOL_TEMPLATE,
    PROMETHEUS_YML,
    REPO,
    RULES_TEST_YML,
    binary,
    ci_trigger_script,
    compose_config,
    env_example,
    free_port,
    wait_for,
    workflow,
)
from tests.fixtures.sim import ZERO_LATENCY

BIN = Path(sys.executable).parent
SECRET_NAME = re.compile(r"PASSWORD|SECRET|AUTH_STRING|API_KEY|TOKEN")
ONE_SHOT = {"minio-init", "deployments"}


def argv(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def flag(args: list[str], name: str) -> str:
    """The value of `--name value` or `--name=value` in args."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {args}")


def workers(config: dict) -> dict[str, dict]:
    return {name: svc for name, svc in config["services"].items() if name.startswith("worker")}


def scrape_targets(prom: dict, job: str) -> set[str]:
    [scrape] = [s for s in prom["scrape_configs"] if s["job_name"] == job]
    return {t for static in scrape["static_configs"] for t in static["targets"]}


# --- the compose file ---------------------------------------------------------------------------

def test_compose_is_the_production_shape():
    config = compose_config()
    services = config["services"]
    assert set(services) >= {"postgres", "prefect-server", "worker-1", "worker-2", "minio", "minio-init",
                             "simulator", "deployments", "prometheus", "pushgateway", "cli"}
    placeholders = env_example()

    # auth on: the server's string, and the same on every client of the API
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == placeholders["PREFECT_AUTH_STRING"]
    assert server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    clients = {name: svc["environment"] for name, svc in services.items()
               if "PREFECT_API_URL" in svc.get("environment", {})}
    assert set(clients) >= {"worker-1", "worker-2", "deployments", "cli"}
    for name, env in clients.items():
        assert env["PREFECT_API_AUTH_STRING"] == server_env["PREFECT_SERVER_API_AUTH_STRING"], name
        assert "PREFECT_API_KEY" not in env, f"{name}: an API key overrides the auth string (401)"

    # two process workers from our image on one pool, whose job template turns the flow-run
    # children's metrics server off (they would crash binding the worker's port) and which
    # the deployments step (`ultraforge deploy`, flows/cli.py) creates with the same template
    assert argv(services["deployments"]) == ["ultraforge", "deploy"]
    pool = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["work_pool"]["name"]
    template = str(POOL_TEMPLATE.relative_to(REPO))
    ws = workers(config)
    assert len(ws) == 2
    names = set()
    for svc in ws.values():
        args = argv(svc)
        assert args[:3] == ["prefect", "worker", "start"]
        assert flag(args, "--pool") == pool == "ultraforge"
        assert flag(args, "--type") == "process"
        assert flag(args, "--base-job-template") == template
        assert "--with-healthcheck" in args
        names.add(flag(args, "--name"))
        assert svc["build"]["dockerfile"] == "infra/Dockerfile"
        env = svc["environment"]
        assert env["PREFECT_CLIENT_METRICS_ENABLED"] == "true"
        assert env["ULTRAFORGE_LAKE_URL"].startswith("s3://")
        assert env["ULTRAFORGE_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert svc["depends_on"]["prefect-server"]["condition"] == "service_healthy"
        assert svc["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert names == set(ws), "each worker registers under its service name"

    # Prometheus scrapes each worker service on its metrics port, and the Pushgateway the
    # workers' flow runs push to; compose mounts exactly this config
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert scrape_targets(prom, "workers") == {
        f"{name}:{svc['environment'].get('PREFECT_CLIENT_METRICS_PORT', '4201')}" for name, svc in ws.items()}
    gateway_port = flag(argv(services["pushgateway"]), "--web.listen-address").rsplit(":", 1)[1]
    assert scrape_targets(prom, "pushgateway") == {f"pushgateway:{gateway_port}"}
    [pushed] = [s for s in prom["scrape_configs"] if s["job_name"] == "pushgateway"]
    assert pushed["honor_labels"] is True
    for svc in ws.values():
        assert svc["environment"]["ULTRAFORGE_PUSHGATEWAY_URL"] == f"http://pushgateway:{gateway_port}"
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("/"))
    assert mounts[str(PROMETHEUS_YML.parent)] == "/etc/prometheus"
    assert flag(argv(prometheus), "--config.file") == "/etc/prometheus/" + PROMETHEUS_YML.name

    # a healthcheck on every long-running service; one-shots say so
    for name, svc in services.items():
        if name in ONE_SHOT:
            assert svc.get("restart") == "no", name
        elif "profiles" not in svc:
            assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, svc in ws.items():
        assert "8080/health" in " ".join(svc["healthcheck"]["test"]), name


def test_compose_file_holds_no_credentials():
    """Every credential in docker-compose.yml is a ${VAR} from .env, and each such VAR is in
    infra/env.example with a placeholder (parsed YAML, before any interpolation)."""
    raw = yaml.safe_load(COMPOSE_YML.read_text())
    text = COMPOSE_YML.read_text()
    for name, svc in raw["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert value.startswith("${"), f"{name}.{key} is a literal, not a ${{VAR}} from .env"
            if "@" in value and "://" in value:  # a URL with credentials
                assert "${" in value.split("@")[0], f"{name}.{key} has literal credentials"
    documented = env_example()
    for var in set(re.findall(r"\$\{([A-Z0-9_]+)", text)):
        assert var in documented, f"{var} is read by docker-compose.yml but not in infra/env.example"
    for var, value in documented.items():
        if SECRET_NAME.search(var):
            assert value == "" or "change-me" in value, f"infra/env.example: {var} is not a placeholder"


def test_pool_template_is_prefects_default_with_metrics_off_in_flow_runs():
    """infra/worker/process-pool.json differs from Prefect's process template only in the env
    default (kept in step with the pinned Prefect: rerun `prefect work-pool
    get-default-base-job-template --type process` after an upgrade)."""
    from prefect.workers.process import ProcessWorker

    ours = json.loads(POOL_TEMPLATE.read_text())
    env = ours["variables"]["properties"]["env"].pop("default")
    assert env == {"PREFECT_CLIENT_METRICS_ENABLED": "false"}
    assert ours == ProcessWorker.get_default_base_job_template()


# --- Prometheus -------------------------------------------------------------------------------

def test_prometheus_config_and_rules_pass_promtool():
    promtool = binary("promtool")
    checked = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(RULES_TEST_YML)],
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_pusher_never_raises_when_the_pushgateway_is_down(caplog):
    pusher = metrics.Pusher(f"http://127.0.0.1:{free_port()}", {"instance": "test"})
    assert pusher.push() is False and pusher.close() is False
    assert len([r for r in caplog.records if "metrics push" in r.getMessage()]) == 1  # logged once


def test_retryable_errors_are_counted_by_status(make_simulator, tmp_path):
    sim = make_simulator("unlimited", overrides={**ZERO_LATENCY, "faults.rate_429": 0.3,
                                                 "faults.retry_after_s": 0})
    pool = PoolConfig.model_validate({
        "endpoints": {"sim429": {"base_url": sim.base_url, "max_attempts": 20}},
        "models": {"m429": {"endpoint": "sim429"}}})

    def count() -> float:
        return REGISTRY.get_sample_value("ultraforge_llm_retryable_errors_total",
                                         {"model": "m429", "endpoint": "sim429", "status": "429"}) or 0.0

    before = count()
    gateway = Gateway(pool, None, {})

    async def go():
        try:
            return await gateway.complete_all([ChatRequest(model="m429", messages=(
                {"role": "user", "content": f"q{i}"},)) for i in range(40)])
        finally:
            await gateway.aclose()

    results = asyncio.run(go())
    assert all(r.ok for r in results)
    injected = sim.stats()["by_outcome"]["injected_429"]
    assert injected > 0 and count() - before == injected


# --- the CI trigger example ---------------------------------------------------------------------

def test_ci_workflow_triggers_with_watch_and_names_its_secrets():
    wf = workflow()
    dispatch = wf["on"]["workflow_dispatch"]["inputs"]
    assert dispatch["deployment"]["default"] == "pipeline/pipeline"
    json.loads(dispatch["params"]["default"])
    assert "schedule" in wf["on"]
    [job] = wf["jobs"].values()
    env = job["env"]
    assert env["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
    assert env["PREFECT_API_AUTH_STRING"] == "${{ secrets.PREFECT_API_AUTH_STRING }}"
    envs = [env, wf.get("env", {}), *(s.get("env", {}) for s in job["steps"])]
    assert not any("PREFECT_API_KEY" in e for e in envs), "an API key overrides the auth string (401)"
    steps = [s.get("run", "") for s in job["steps"]]
    assert any(s.startswith("pip install .") for s in steps)
    script = ci_trigger_script()
    assert "${{" not in script, "inputs reach the script through env, not pasted into it"

    # every `prefect ...` command of the workflow, with only flags that this Prefect has
    commands = [shlex.split(line) for s in steps for line in s.replace("\\\n", " ").splitlines()
                if line.strip().startswith("prefect ")]
    run = next(c for c in commands if c[1:3] == ["deployment", "run"])
    assert "--watch" in run and "--watch-timeout" in run
    for cmd in commands:
        words = [w for w in cmd[1:] if re.fullmatch(r"[a-z-]+", w)][:2]
        used = {w.split("=")[0] for w in cmd if w.startswith("--")}
        help_text = subprocess.run([str(BIN / "prefect"), *words, "--help"], capture_output=True,
                                   text=True, env={**os.environ, "COLUMNS": "250"}, check=True).stdout
        offered = set(re.findall(r"--[a-z][a-z-]*", help_text))
        assert used <= offered, f"prefect {' '.join(words)}: {sorted(used - offered)} not in --help"


# --- monitoring as local processes ---------------------------------------------------------------

def query(prom_url: str, expr: str) -> list[dict]:
    reply = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def wait_query(prom_url: str, expr: str, check, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        result = query(prom_url, expr)
        if check(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


@pytest.mark.slow
def test_prometheus_scrapes_the_workers_and_the_pushed_metrics_of_a_flow_run(make_simulator, tmp_path):
    """Pushgateway, Prometheus and two worker-like processes with compose's commands and
    settings; a flow-run-like child with the pool template's env calls a simulator through the
    gateway and exits; Prometheus then has both workers up and the run's pushed calls, 429s
    included, under its flow run id."""
    config = compose_config()
    services = config["services"]
    pushgateway_bin, prometheus_bin = binary("prometheus-pushgateway"), binary("prometheus")
    procs: list[subprocess.Popen] = []
    log = open(tmp_path / "services.log", "wb")  # noqa: SIM115 - closed in finally
    base_env = {**os.environ, "PREFECT_HOME": str(tmp_path / "ph"), "DO_NOT_TRACK": "1"}

    def start(args: list[str], env: dict | None = None) -> None:
        procs.append(subprocess.Popen(args, cwd=REPO, env={**base_env, **(env or {})},
                                      stdout=log, stderr=subprocess.STDOUT))

    try:
        # the Pushgateway, as compose starts it
        pg_port = free_port()
        pg_args = [a for a in argv(services["pushgateway"]) if not a.startswith("--web.listen-address")]
        start([pushgateway_bin, *pg_args, f"--web.listen-address=127.0.0.1:{pg_port}"])

        # the workers' metrics servers: Prefect's own start_client_metrics_server, which
        # `prefect worker start` calls, with each worker service's metrics settings
        targets: dict[str, str] = {}
        for name, svc in workers(config).items():
            port = free_port()
            env = {k: v for k, v in svc["environment"].items() if k.startswith("PREFECT_CLIENT_METRICS")}
            targets[f"{name}:{env.get('PREFECT_CLIENT_METRICS_PORT', '4201')}"] = f"127.0.0.1:{port}"
            start([sys.executable, "-c", "import time\nfrom prefect.utilities.services import "
                   "start_client_metrics_server\nstart_client_metrics_server()\ntime.sleep(300)"],
                  {**env, "PREFECT_CLIENT_METRICS_PORT": str(port)})

        # Prometheus: our config with compose's host names mapped to loopback, a 1 s interval
        prom_port = free_port()
        prom = yaml.safe_load(PROMETHEUS_YML.read_text())
        targets["pushgateway:9091"] = f"127.0.0.1:{pg_port}"
        targets["localhost:9090"] = f"127.0.0.1:{prom_port}"
        for scrape in prom["scrape_configs"]:
            for static in scrape["static_configs"]:
                static["targets"] = [targets[t] for t in static["targets"]]
        prom["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        prom["rule_files"] = [str(PROMETHEUS_YML.parent / f) for f in prom["rule_files"]]
        local_yml = tmp_path / "prometheus.yml"
        local_yml.write_text(yaml.safe_dump(prom))
        replaced = {"--config.file": str(local_yml), "--storage.tsdb.path": str(tmp_path / "tsdb"),
                    "--web.listen-address": f"127.0.0.1:{prom_port}"}
        prom_args = [a for a in argv(services["prometheus"]) if a.split("=")[0] not in replaced]
        start([prometheus_bin, *prom_args, *(f"{k}={v}" for k, v in replaced.items())])
        prom_url = f"http://127.0.0.1:{prom_port}"

        # a flow run's process: the worker's env, then the pool template's env on top
        sim = make_simulator("unlimited", overrides={**ZERO_LATENCY, "faults.rate_429": 0.2,
                                                     "faults.retry_after_s": 0})
        flow_run_id = str(uuid.uuid4())
        template_env = json.loads(POOL_TEMPLATE.read_text())["variables"]["properties"]["env"]["default"]
        worker_env = services["worker-1"]["environment"]
        child_env = {**worker_env, **template_env, "PREFECT__FLOW_RUN_ID": flow_run_id,
                     "ULTRAFORGE_PUSHGATEWAY_URL": f"http://127.0.0.1:{pg_port}",
                     "ULTRAFORGE_ENDPOINT_BASE_URL": sim.base_url,
                     "ULTRAFORGE_LAKE_URL": str(tmp_path / "lake"),
                     "ULTRAFORGE_DATA_DIR": str(tmp_path / "data")}
        for key in ("ULTRAFORGE_S3_ENDPOINT_URL", "PREFECT_API_URL"):
            child_env.pop(key)
        wait_for(f"http://127.0.0.1:{pg_port}/-/ready")
        child = subprocess.run([sys.executable, str(Path(__file__).with_name("pushing_flow_run.py")),
                                "gpt-4", "30"], cwd=REPO, env={**base_env, **child_env},
                               capture_output=True, text=True, timeout=120)
        assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-3000:]
        assert json.loads(child.stdout.splitlines()[-1])["ok"] == 30
        injected = sim.stats()["by_outcome"]["injected_429"]
        assert injected > 0

        wait_for(f"{prom_url}/-/ready")
        up = wait_query(prom_url, 'up{job="workers"} == 1', lambda r: len(r) == 2)
        assert {s["metric"]["instance"] for s in up} == {targets[t] for t in scrape_targets(
            yaml.safe_load(PROMETHEUS_YML.read_text()), "workers")}
        run_filter = f'flow_run_id="{flow_run_id}",job="ultraforge"'
        paid = wait_query(prom_url, f'sum(ultraforge_llm_calls_total{{{run_filter},outcome="paid"}})',
                          lambda r: bool(r) and float(r[0]["value"][1]) == 30)
        assert paid and float(paid[0]["value"][1]) == 30, paid
        r429 = query(prom_url, f'sum(ultraforge_llm_retryable_errors_total{{{run_filter},status="429"}})')
        assert float(r429[0]["value"][1]) == injected
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
