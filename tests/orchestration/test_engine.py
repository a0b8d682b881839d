"""The shard engine under trouble (issue 7), with real components: two runs at once on one data
dir, Prefect's retry of shard tasks, a fatal reply, an unreachable endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow, task

from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.errors import FatalAPIError
from tasks.adapters.lake import Lake
from tasks.adapters.resources import current
from tasks.shards import SHARD_TASK
from tests.fixtures.factory import (
    RESULT_IDS,
    fast_pool,
    raw_duplicates,
    settings_env,
    write_prompts,
    write_recipe,
)

ROOT = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(Path(sys.executable).parent / "ultraforge"), *args], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_runs_started_at_once_on_one_data_dir_pay_each_call_once(
        prefect_api, make_simulator, local_settings, tmp_path):
    # 20 blocks of ~1 s each, 3 at a time: each run lasts long enough that a few seconds of
    # difference in process start-up cannot keep them from meeting on a block
    sim = make_simulator("unlimited", seed=8, overrides={"latency.ttft_s": 0.4})
    prompts = write_prompts(tmp_path / "prompts.jsonl", 60)
    recipe = write_recipe(tmp_path, [{"name": "twice", "path": str(prompts)}], shard_prompts=3,
                          max_parallel_shards=3)
    env = {"PREFECT_API_URL": prefect_api,
           **settings_env(local_settings, sim.base_url, fast_pool(tmp_path))}

    runs = [cli(env, "run", "ultrafeedback", "--recipe", str(recipe)) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    counts = [json.loads(out)["counts"] for out, _ in outs]

    stats = sim.stats()
    assert stats["ok_repeats"] == 0
    # between them the two runs paid for every call exactly once
    assert sum(c["generation_requests_paid"] for c in counts) == 60 * 4
    assert sum(c["critique_requests_paid"] for c in counts) == 60 * 4
    assert all(c["exported_completions"] == 240 for c in counts)
    assert sum(c["blocks_waited_for"] for c in counts) > 0  # they really did meet on a block
    assert raw_duplicates(Lake.from_settings(local_settings)) == dict.fromkeys(
        [t for t, _ in RESULT_IDS], 0)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_shard_task_is_retried_by_prefect_but_a_fatal_one_is_not(prefect_api, kind):
    calls: dict[str, int] = {"transient": 0, "fatal": 0}

    def body(what: str) -> str:
        calls[what] += 1
        if calls[what] == 1:
            raise (FatalAPIError("local", "quota exhausted") if what == "fatal"
                   else RuntimeError("lake briefly unreachable"))
        return "landed"

    async def async_body(what: str) -> str:
        return body(what)

    shard = task(name=f"shard-{kind}", **{**SHARD_TASK, "retry_delay_seconds": 0})(
        body if kind == "sync" else async_body)

    @flow
    def run() -> tuple[str, str]:
        transient = shard.submit("transient").result()
        fatal = shard.submit("fatal")
        fatal.wait()
        return transient, fatal.state.type.value

    transient, fatal_state = run()
    assert transient == "landed" and calls["transient"] == 2
    assert fatal_state == "FAILED" and calls["fatal"] == 1


@pytest.mark.slow
def test_a_fatal_reply_stops_all_paying_within_a_second(prefect_api, make_simulator,
                                                        local_settings, tmp_path, monkeypatch):
    # the quota runs out a few dozen calls in, while four shards have calls in flight
    sim = make_simulator("unlimited", seed=9, overrides={"latency.ttft_s": 0.2,
                                                         "limits.quota_tokens": 40_000})
    prompts = write_prompts(tmp_path / "prompts.jsonl", 80)
    recipe = write_recipe(tmp_path, [{"name": "quota", "path": str(prompts)}], shard_prompts=10,
                          max_parallel_shards=4)
    for key, value in settings_env(local_settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)

    state = ultrafeedback(UltraFeedbackParams(recipe=str(recipe)), return_state=True)
    ended = time.monotonic()
    assert state.is_failed()
    with pytest.raises(FatalAPIError, match="quota exhausted"):
        state.result()
    gateway = current().gateway
    assert gateway.fatal_at is not None
    assert gateway.last_sent_at - gateway.fatal_at < 1.0  # nothing sent a second after the fatal
    assert ended - gateway.fatal_at < 10  # and the run ended promptly
    time.sleep(0.5)  # replies to calls sent before the fatal reply may still arrive
    settled = sim.stats()["requests"]
    time.sleep(1.5)
    assert sim.stats()["requests"] == settled
    assert sim.stats()["by_outcome"]["insufficient_quota"] >= 1


def test_an_unreachable_endpoint_fails_fast_with_one_line_naming_it(prefect_api, local_settings,
                                                                     tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prompts = write_prompts(tmp_path / "prompts.jsonl", 4)
    recipe = write_recipe(tmp_path, [{"name": "four", "path": str(prompts)}])
    env = {"PREFECT_API_URL": prefect_api,
           **settings_env(local_settings, f"http://127.0.0.1:{port}/v1", fast_pool(tmp_path))}

    started = time.monotonic()
    proc = cli(env, "run", "ultrafeedback", "--recipe", str(recipe))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert time.monotonic() - started < 30
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: endpoint 'local': cannot reach "
                               f"http://127.0.0.1:{port}/v1")
    assert "refused" in lines[0].lower()
    assert not Lake.from_settings(local_settings).shard_keys("uf_completions")
