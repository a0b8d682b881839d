"""The `ultrachat` flow against real components: the simulator over HTTP, a real Prefect API, the
lake (moto S3 or a local directory), the DuckDB warehouse, and the CLI in a subprocess that is
SIGKILLed mid-generation and rerun."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from flows.ultrachat import UltraChatParams, ultrachat
from tasks.adapters.lake import Lake
from tasks.adapters.settings import RECIPES_DIR, Settings
from tasks.adapters.warehouse import Warehouse
from tasks.core.ultrachat.dialogue import STOP_REASONS
from tasks.core.ultrachat.filters import REJECT_REASONS
from tasks.core.ultrachat.tables import T_DIALOGUES, T_KEPT, T_OPENINGS, T_REJECTS, T_TURNS, TABLES
from tasks.core.ultrachat.turns import has_role_leakage

RANGES = {"world": (3, 7), "writing": (2, 4), "materials": (2, 4)}
EXPORTS = ("ultrachat.jsonl", "ultrachat.parquet", "messages.jsonl", "messages.parquet")
LEAKY_LABEL = ("user:", "assistant:", "human:", "**user", "[user]", "as the user,")
KEY_ENV, API_KEY = "ULTRACHAT_TEST_API_KEY", "sk-ultrachat-sentinel-7f3a9c1e"


def _fast_pool(tmp_path: Path) -> Path:
    """The bundled pool with client-side limits out of the way (the tests measure behaviour, not
    pacing; the tier3 measurement in the closing note uses the bundled limits), and an API key
    read from KEY_ENV, which must never reach anything the run writes."""
    pool = yaml.safe_load((RECIPES_DIR / "pool.yaml").read_text())
    pool["endpoints"]["local"]["limits"] = {"rpm": 1_000_000, "tpm": 1_000_000_000,
                                            "max_concurrency": 512, "initial_concurrency": 256}
    pool["endpoints"]["local"]["api_key_env"] = KEY_ENV
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


def _env(settings: Settings, base_url: str, pool: Path) -> dict[str, str]:
    env = {"ULTRAFORGE_DATA_DIR": str(settings.data_dir), "ULTRAFORGE_ENDPOINT_BASE_URL": base_url,
           "ULTRAFORGE_POOL_PATH": str(pool), KEY_ENV: API_KEY}
    for field in ("lake_url", "s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key"):
        value = getattr(settings, field)
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if value is not None:
            env[f"ULTRAFORGE_{field.upper()}"] = str(value)
    return env


def _check_export(lake: Lake, prefix: str) -> list[dict]:
    raw = [json.loads(x) for x in lake.read_bytes(f"{prefix}/ultrachat.jsonl").splitlines()]
    msgs = [json.loads(x) for x in lake.read_bytes(f"{prefix}/messages.jsonl").splitlines()]
    ids = [r["id"] for r in raw]
    assert len(set(ids)) == len(ids) and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert [list(r) for r in raw] == [["id", "data"]] * len(raw)
    for r, m in zip(raw, msgs, strict=True):
        roles = [x["role"] for x in m["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) % 2 == 0
        lo, hi = RANGES[m["sector"]]
        assert lo <= len(roles) // 2 <= hi, (m["id"], m["sector"], len(roles) // 2)
        assert r["data"] == [x["content"] for x in m["messages"]]
        assert m["prompt"] == r["data"][0] and len(m["prompt_id"]) == 64
        for i, turn in enumerate(r["data"]):
            assert turn.strip()
            assert not turn.lstrip().lower().startswith(LEAKY_LABEL), (m["id"], i, turn[:80])
            assert not has_role_leakage(turn, "user" if i % 2 == 0 else "assistant")
    parquet = pq.read_table(lake.url(f"{prefix}/ultrachat.parquet"),
                            filesystem=None if lake.is_local else lake.fs).to_pylist()
    assert parquet == raw
    return msgs


def _assert_secrets_nowhere(secrets: list[bytes], settings: Settings, lake: Lake,
                            flow_run_id, log_text: str) -> None:
    """None of `secrets` is in the lake, the DuckDB file, the journal, the run's Prefect
    artifacts, or the logs captured in this process."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    written = {path: lake.fs.cat_file(path) for path in lake.fs.find(lake.root)}
    files = [settings.warehouse, *settings.journal.rglob("*")]
    written |= {str(f): f.read_bytes() for f in files if f.is_file()}
    assert any(p.endswith(".duckdb") for p in written) and any("journal" in p for p in written)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert len(artifacts) >= 5
    written |= {f"artifact {a.key or a.id}": json.dumps([a.data, a.description], default=str).encode()
                for a in artifacts}
    assert len(log_text) > 100_000  # debug lines of every request: a real haystack
    written["captured logs"] = log_text.encode()
    for secret in secrets:
        assert [where for where, data in written.items() if secret in data] == []


def test_hundred_dialogues_across_three_sectors(prefect_api, make_simulator, s3_settings,
                                                tmp_path, monkeypatch, caplog):
    """100 dialogues on an S3 lake, through 429s and 5xx: ranges, alternation, no leakage, stop
    and reject reasons, no secret in anything written, and a rerun that pays nothing."""
    caplog.set_level(logging.DEBUG)  # every library's debug lines too: none may carry a secret
    sim = make_simulator("unlimited", seed=11, overrides={
        "faults.role_leak": 0.2, "faults.length": 0.02, "faults.rate_429": 0.04,
        "faults.rate_5xx": 0.04, "faults.retry_after_s": 0.05})
    for k, v in _env(s3_settings, sim.base_url, _fast_pool(tmp_path)).items():
        monkeypatch.setenv(k, v)

    state = ultrachat(UltraChatParams(), return_state=True)
    out = state.result()

    assert out["dialogues"] == 100
    assert out["kept"] + out["rejected"] == 100 and out["exported"] == out["kept"] >= 85
    lake = Lake.from_settings(Settings())
    msgs = _check_export(lake, "exports/ultrachat/ultrachat")
    assert {m["sector"] for m in msgs} == set(RANGES)

    dialogues = lake.read_table(T_DIALOGUES).to_pylist()
    assert len(dialogues) == 100
    assert {d["sector"] for d in dialogues} == set(RANGES)
    assert all(d["stop_reason"] in STOP_REASONS for d in dialogues)
    assert sum(d["stop_reason"] == "target_rounds" for d in dialogues) >= 60
    assert all(d["rounds"] <= RANGES[d["sector"]][1] for d in dialogues)
    assert all(d["rounds"] == d["target_rounds"] for d in dialogues
               if d["stop_reason"] == "target_rounds")

    # transient errors were retried by the gateway: every request answered once, none given up
    stats = sim.stats()
    assert stats["by_outcome"]["injected_429"] > 10
    assert sum(stats["by_outcome"][f"error_{c}"] for c in (500, 502, 503)) > 10
    assert stats["ok_repeats"] == 0
    assert sum(u["failed"] for u in out["tables"]["usage-by-role"]) == 0

    # the simulator's role leaks reached us, and were stripped or re-asked, never exported
    assert stats["by_outcome"]["role_leak"] > 10
    verdicts = [t["verdict"] for t in lake.read_table(T_TURNS).to_pylist() if t["role"] == "user"]
    assert "stripped" in verdicts and "user_reads_like_assistant" in verdicts

    rejects = lake.read_table(T_REJECTS).to_pylist()
    assert len(rejects) == out["rejected"]
    assert all(r["reason"] in REJECT_REASONS and r["detail"] for r in rejects)
    assert {r["reason"]: r["rejected"] for r in out["tables"]["reject-reasons"]} == {
        reason: sum(r["reason"] == reason for r in rejects) for reason in {r["reason"] for r in rejects}}
    openings = lake.read_table(T_OPENINGS).to_pylist()
    assert sum(o["status"] == "selected" for o in openings) == 100

    with Warehouse.from_settings(Settings()) as wh:
        assert set(wh.refresh_views(TABLES)) == set(TABLES)
        [row] = wh.query(f"SELECT count(*) AS n FROM {T_KEPT}")
        assert row["n"] == out["kept"]
    usage = {(u["role"], u["model"]) for u in out["tables"]["usage-by-role"]}
    assert usage == {(r, "gpt-3.5-turbo") for r in ("assistant", "user_simulator", "opening_generator")}

    # the summary artifacts are on the Prefect API
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["ultrachat-ultrachat", "ultrachat-ultrachat-stop-reasons",
            "ultrachat-ultrachat-rounds-histogram", "ultrachat-ultrachat-usage-by-role"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)

    # Neither the API key (read from KEY_ENV: the run would have failed without it) nor the S3
    # secret is anywhere the run wrote or logged.
    _assert_secrets_nowhere([API_KEY.encode(), s3_settings.s3_secret_access_key.get_secret_value().encode()],
                            s3_settings, lake, state.state_details.flow_run_id, caplog.text)

    # a rerun pays nothing and changes nothing
    before = sim.stats()["requests"]
    again = ultrachat(UltraChatParams())
    assert sim.stats()["requests"] == before
    assert {k: again[k] for k in ("dialogues", "kept", "rejected")} == \
        {k: out[k] for k in ("dialogues", "kept", "rejected")}


def _cli(data: Path, base_url: str, pool: Path, api_url: str) -> subprocess.Popen:
    env = {**os.environ, **_env(Settings(data_dir=data), base_url, pool),
           "PREFECT_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    cli = str(Path(sys.executable).parent / "ultraforge")
    return subprocess.Popen([cli, "run", "ultrachat"],
                            cwd=Path(__file__).resolve().parents[2], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out)


def test_sigkill_mid_generation_rerun_is_byte_identical_and_pays_nothing_twice(
        prefect_api, make_simulator, tmp_path):
    # A little latency so the kill lands mid-generation; no content faults, whose draws depend
    # on how often the server saw a body (a request in flight at the kill is sent again).
    latency = {"latency.ttft_s": 0.02, "latency.per_token_s": 0.0005}
    pool = _fast_pool(tmp_path)

    ref_sim = make_simulator("unlimited", seed=3, overrides=latency)
    ref = _finish(_cli(tmp_path / "ref", ref_sim.base_url, pool, prefect_api))
    ref_stats = ref_sim.stats()
    assert ref_stats["ok_repeats"] == 0

    sim = make_simulator("unlimited", seed=3, overrides=latency)
    proc = _cli(tmp_path / "run", sim.base_url, pool, prefect_api)
    user_turns = ref_stats["by_kind"]["user_turn"]
    deadline = time.monotonic() + 120
    while sim.stats()["by_kind"].get("user_turn", 0) < user_turns // 2:
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let requests in flight at the kill finish on the server side
    at_kill = sim.stats()
    run_lake = Lake(str(tmp_path / "run" / "lake"))
    assert not run_lake.exists("exports/ultrachat/ultrachat/ultrachat.jsonl")
    assert 0 < at_kill["by_kind"]["user_turn"] < user_turns

    rerun = _finish(_cli(tmp_path / "run", sim.base_url, pool, prefect_api))
    final = sim.stats()

    ref_lake = Lake(str(tmp_path / "ref" / "lake"))
    for name in EXPORTS:
        rel = f"exports/ultrachat/ultrachat/{name}"
        assert run_lake.read_bytes(rel) == ref_lake.read_bytes(rel), name
    assert {k: rerun[k] for k in ("dialogues", "kept", "exported")} == \
        {k: ref[k] for k in ("dialogues", "kept", "exported")}
    # Every distinct request was answered exactly as often as in the uninterrupted run, except
    # those in flight at the kill (at most the dialogues running at once: 2 shards × 50).
    assert final["by_outcome"]["ok"] - final["ok_repeats"] == ref_stats["by_outcome"]["ok"]
    assert final["ok_repeats"] <= 100
    assert final["ok_repeats"] < at_kill["by_outcome"]["ok"] // 2


def test_dry_run_prints_plan_and_bad_config_is_one_line(tmp_path):
    from click.testing import CliRunner

    from flows.cli import main

    res = CliRunner().invoke(main, ["run", "ultrachat", "--dry-run",
                                    "--set", "sectors.world.dialogues=7"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)["plan"]
    assert plan["world"]["dialogues"] == 7 and plan["materials"]["inputs"]["passages"] == 24
    assert plan["writing"]["inputs"]["types"] == 20 and plan["world"]["inputs"]["topics"] == 30

    res = CliRunner().invoke(main, ["run", "ultrachat", "--dry-run",
                                    "--set", "sectors.world.rounds=[5,3]"])
    assert res.exit_code == 1
    assert "sectors.world.rounds" in res.output and "Traceback" not in res.output


BAD_RECIPE_VALUES = [
    ("models.assistant=nope", "models.assistant: 'nope' is not in the model pool"),
    ("models.opening_generator=gpt-5", "models.opening_generator: 'gpt-5' is not in the model pool"),
    ("params.assistant.max_tokns=5", "params.assistant: Value error, unknown sampling parameter(s) "
                                     "'max_tokns'"),
]


@pytest.mark.parametrize(("override", "message"), BAD_RECIPE_VALUES)
def test_bad_model_or_param_fails_dry_run_and_run_before_anything_is_paid(
        override, message, prefect_api, make_simulator, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from flows.cli import main

    sim = make_simulator("unlimited")
    for k, v in _env(Settings(data_dir=tmp_path / "data"), sim.base_url, _fast_pool(tmp_path)).items():
        monkeypatch.setenv(k, v)
    for dry_run in (["--dry-run"], []):
        res = CliRunner().invoke(main, ["run", "ultrachat", *dry_run, "--set", override])
        assert res.exit_code == 1, (dry_run, res.output)
        assert message in res.output and "Traceback" not in res.output
    assert sim.stats()["requests"] == 0
    assert not (tmp_path / "data" / "lake").exists()


def test_quota_spent_mid_dialogues_stops_paying_at_once_and_is_not_retried(
        prefect_api, make_simulator, tmp_path, monkeypatch):
    from tasks.adapters.errors import FatalAPIError

    # Enough quota for the openings and a few turns; a little latency so turns overlap.
    sim = make_simulator("unlimited", overrides={"limits.quota_tokens": 55_000,
                                                 "latency.ttft_s": 0.02,
                                                 "latency.per_token_s": 0.0005})
    for k, v in _env(Settings(data_dir=tmp_path / "data"), sim.base_url, _fast_pool(tmp_path)).items():
        monkeypatch.setenv(k, v)
    small = ["sectors.world.dialogues=5", "sectors.writing.dialogues=5",
             "sectors.materials.dialogues=5"]
    with pytest.raises(FatalAPIError, match="quota"):
        ultrachat(UltraChatParams(overrides=small))
    time.sleep(0.5)  # turns on the wire when the run stopped are still answered (and counted)
    at_error = sim.stats()
    assert at_error["by_kind"]["user_turn"] > 0  # the quota ran out while dialogues were growing
    # At most one refused turn per running dialogue, and no retry of the shard (a second wave).
    assert 0 < at_error["by_outcome"]["insufficient_quota"] <= 15
    time.sleep(1.0)  # ~10 turns' time for each dialogue, were any still going
    assert sim.stats()["requests"] == at_error["requests"]
    assert not Lake(str(tmp_path / "data" / "lake")).exists("exports/ultrachat")
