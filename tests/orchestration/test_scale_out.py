"""Runs with parts against a real Prefect API (the test server). With no worker the parts stay
scheduled, so the parent does every shard itself, cancels them and publishes what a run alone
publishes. With a worker process on the pool, UltraChat's and translate's parts share the shards
and the sets are those of runs alone; UltraFeedback's parts on two workers, one of them killed:
tests/orchestration/test_services.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import StateType

from flows.translate import TranslateParams, translate
from flows.ultrachat import UltraChatParams, ultrachat
from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake
from tasks.core.shards import Part, ScaleOut, ShardSummary
from tasks.core.usage import UsageRow
from tasks.scaleout import Fan, land_shard, read_part
from tests.fixtures.factory import fast_pool, raw_duplicates, settings_env, settings_in, write_prompts

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = ["sources.0.limit=12", "plan.n_models=2", "shard_prompts=3"]


def children_of(parent_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_run_id])))


def env_for(tmp_path, monkeypatch, sim) -> Path:
    """The flows of this process pointed at a fresh data dir under `tmp_path` and `sim`; the
    lake's path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = settings_in(tmp_path / "data")
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ULTRAFORGE_PART_GRACE_S", "5")
    return Path(settings.lake_url)


def test_parts_no_worker_takes_are_cancelled_and_the_parent_does_every_shard(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited", seed=2)
    env_for(tmp_path, monkeypatch, sim)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    ultrafeedback.to_deployment(name="part").apply()  # no worker serves it
    params = UltraFeedbackParams(overrides=[f"sources.0.path={prompts}", *SMALL],
                                 scale={"parts": 2})
    state = ultrafeedback(params, return_state=True)
    assert state.is_completed(), state
    out = state.result()
    assert out.counts.blocks == 4 and out.counts.blocks_run == 4
    assert out.counts.exported_completions == 24 and out.counts.failed_completions == 0
    assert out.counts.generation_requests_paid == 24  # each call once
    parts = children_of(state.state_details.flow_run_id)
    assert sorted(p.name.rsplit("-part-", 1)[1] for p in parts) == ["1-of-2", "2-of-2"]
    assert all(p.state.type == StateType.CANCELLED for p in parts), [p.state for p in parts]
    assert raw_duplicates(Lake(str(tmp_path / "data" / "lake"))) == {
        "uf_completions": 0, "uf_critiques": 0, "uf_annotations": 0}


def test_a_lost_part_s_shards_count_in_its_parent_s_summary(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    """A part lost with its worker after ending one shard: the parent marks it Crashed (its
    grace over) and counts the shard it landed, not only the parts that finished."""
    from prefect import flow
    from prefect.states import Running

    sim = make_simulator("unlimited")
    lake = Lake(str(env_for(tmp_path, monkeypatch, sim)))
    monkeypatch.setenv("ULTRAFORGE_PART_GRACE_S", "0")
    ultrafeedback.to_deployment(name="part").apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ultrafeedback/part")
        lost = client.create_flow_run_from_deployment(deployment.id, name="lost-part")
        client.set_flow_run_state(lost.id, Running(), force=True)  # its worker went silent
    scale = ScaleOut(part=Part(index=0, count=2, parent="p-1", plan="d"))
    paid = ShardSummary(stage="generation", key="block-3", status="done", items=4, rows=8,
                        usage=[UsageRow(stage="generation", model="m", requests=8)])
    land_shard(lake, "ultrafeedback", scale.part, paid)

    @flow
    def parent() -> tuple:
        return Fan("ultrafeedback", "p-1", [lost]).settle(lake)

    shards, children = parent()
    assert shards == [paid]
    assert [(c.state, c.shards, c.requests_paid) for c in children] == [("Crashed", 1, 8)]


def test_a_retried_part_s_skipped_shards_leave_the_summaries_of_the_run_that_paid(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    part = Part(index=1, count=2, parent="p-1", plan="d")
    paid = ShardSummary(stage="generation", key="block-3", status="done", items=4, rows=8,
                        usage=[UsageRow(stage="generation", model="m", requests=8)])
    land_shard(lake, "ultrafeedback", part, paid)
    land_shard(lake, "ultrafeedback", part, paid.model_copy(update={"status": "skipped", "usage": []}))
    assert read_part(lake, "ultrafeedback", "p-1", 1) == [paid]


def test_parts_without_their_deployment_are_a_config_error_naming_it(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited")
    env_for(tmp_path, monkeypatch, sim)
    params = UltraChatParams(overrides=["sectors.world.dialogues=1", "sectors.writing.dialogues=1",
                                        "sectors.materials.dialogues=1"], scale={"parts": 3})
    with pytest.raises(ConfigError, match="'ultrachat/part'"):
        ultrachat(params)


def test_a_part_whose_worker_plans_other_shards_refuses_to_run_and_pays_no_dialogue_turn(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited")
    env_for(tmp_path, monkeypatch, sim)
    one = ["sectors.world.dialogues=1", "sectors.writing.dialogues=1", "sectors.materials.dialogues=1"]
    elsewhere = {"part": {"index": 0, "count": 2, "parent": "p-1", "plan": "another list"}}
    with pytest.raises(ConfigError, match="plans other shards"):
        ultrachat(UltraChatParams(overrides=one, scale=elsewhere))
    assert sim.stats()["by_kind"].get("user_turn", 0) == 0  # no dialogue turn was paid


# 12 dialogues, a shard each; then their translation, a dialogue a block, the parent one block
# at a time (else it takes the first four before the parts start)
DIALOGUES = ["sectors.world.dialogues=4", "sectors.writing.dialogues=4",
             "sectors.materials.dialogues=4", "dialogue.shard_size=1"]
TRANSLATE = ["set=ultrachat", "batch_records=1", "max_parallel_shards=1"]
# 0.5 s a call, two at a time: the parent's pass (about 20 s) lasts long enough for the parts
# (a process each, 5-8 s to start on an idle 2-core machine) to take shards of it
SLOW = {"latency.ttft_s": 0.5, "latency.per_token_s": 0, "latency.max_num_seqs": 2}


def job(scale: dict) -> tuple[dict, object]:
    """UltraChat, then its Japanese version, both with `scale`."""
    chat = ultrachat(UltraChatParams(overrides=DIALOGUES, scale=scale))
    return chat, translate(TranslateParams(overrides=TRANSLATE, scale=scale))


@pytest.mark.serial  # beside another heavy test, the parts started after the parent had done all
def test_ultrachat_and_translate_in_parts_on_a_worker_give_the_sets_of_runs_alone(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    # the job alone: its own data dir and simulator (same seed, so the same answers)
    alone_sim = make_simulator("unlimited", seed=5, overrides=SLOW)
    alone_lake = env_for(tmp_path / "alone", monkeypatch, alone_sim)
    started = time.monotonic()
    job({})
    print(f"alone: {time.monotonic() - started:.1f} s, {alone_sim.stats()['requests']} calls")

    sim = make_simulator("unlimited", seed=5, overrides=SLOW)
    lake = env_for(tmp_path / "parts", monkeypatch, sim)
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "ULTRAFORGE_APP_DIR": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    bin_dir = Path(sys.executable).parent
    deploy = subprocess.run([bin_dir / "ultraforge", "deploy"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    # one worker, as on another machine: its own data dir (journal), the same lake
    worker = subprocess.Popen(
        [bin_dir / "prefect", "worker", "start", "--pool", "ultraforge", "--limit", "2"], cwd=REPO,
        env={**env, "ULTRAFORGE_DATA_DIR": str(tmp_path / "worker"),
             "ULTRAFORGE_JOURNAL_DIR": str(tmp_path / "worker" / "journal"),
             "ULTRAFORGE_WAREHOUSE_PATH": str(tmp_path / "worker" / "ultraforge.duckdb"),
             "PREFECT_WORKER_QUERY_SECONDS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        chat, japanese = job({"parts": 2})
        print(f"in parts: {time.monotonic() - started:.1f} s, {sim.stats()['requests']} calls")
    finally:
        worker.terminate()  # a worker may take its time to stop: then it is killed
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()

    # the parts of each run did shards (both, in every run here so far; one is enough to share
    # a run, and on a busy machine the second may start late, even after the parent has done
    # everything: then it is cancelled), and each call was paid once, as alone
    by_parts = {"ultrachat": chat["tables"]["parts"],
                "translate": [p.model_dump() for p in japanese.parts]}
    for flow, parts in by_parts.items():
        ended = [(p["state"], p["shards"], p["requests_paid"]) for p in parts]
        print(flow, "parts (state, shards run, calls paid):", ended)
        assert {state for state, _, _ in ended} <= {"Completed", "Cancelled"}, (flow, ended)
        assert any(state == "Completed" and shards > 0 for state, shards, _ in ended), (flow, ended)
    assert sim.stats()["ok_repeats"] == 0, sim.stats()["ok_repeats_by_kind"]
    assert sim.stats()["requests"] == alone_sim.stats()["requests"]
    for folder in ("exports/ultrachat/ultrachat", "exports/ultrachat-ja/ultrachat/data"):
        names = sorted(p.name for p in (alone_lake / folder).glob("*.parquet"))
        assert names, folder
        for name in names:
            assert pq.read_table(lake / folder / name).equals(
                pq.read_table(alone_lake / folder / name)), f"{folder}/{name}"
