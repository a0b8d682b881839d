"""A run with parts against a real Prefect API (the test server) and no worker: the parts stay
scheduled, so the parent does every shard itself, cancels them and publishes what a run alone
publishes. With workers the parts share the shards: tests/orchestration/test_services.py."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import StateType

from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake
from tests.fixtures.factory import fast_pool, raw_duplicates, settings_env, settings_in, write_prompts

pytestmark = pytest.mark.slow

SMALL = ["sources.0.limit=12", "plan.n_models=2", "shard_prompts=3"]


def children_of(parent_run_id) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_run_id])))


def env_for(tmp_path, monkeypatch, sim) -> None:
    settings = settings_in(tmp_path / "data")
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ULTRAFORGE_PART_GRACE_S", "5")


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


def test_parts_without_their_deployment_are_a_config_error_naming_it(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited")
    env_for(tmp_path, monkeypatch, sim)
    from flows.ultrachat import UltraChatParams, ultrachat

    params = UltraChatParams(overrides=["sectors.world.dialogues=1", "sectors.writing.dialogues=1",
                                        "sectors.materials.dialogues=1"], scale={"parts": 3})
    with pytest.raises(ConfigError, match="'ultrachat/part'"):
        ultrachat(params)


def test_a_part_whose_worker_plans_other_shards_refuses_to_run_and_pays_nothing(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    sim = make_simulator("unlimited")
    env_for(tmp_path, monkeypatch, sim)
    from flows.ultrachat import UltraChatParams, ultrachat

    one = ["sectors.world.dialogues=1", "sectors.writing.dialogues=1", "sectors.materials.dialogues=1"]
    elsewhere = {"part": {"index": 0, "count": 2, "parent": "p-1", "plan": "another list"}}
    with pytest.raises(ConfigError, match="plans other shards"):
        ultrachat(UltraChatParams(overrides=one, scale=elsewhere))
    assert sim.stats()["by_kind"].get("user_turn", 0) == 0  # no dialogue turn was paid
