"""The batch route in the UltraFeedback flow (issue 9): the judge stages through the simulator's
Batch API give the same export as an all-online run at half the judge cost, and a run that stops
waiting leaves its calls pending for the next run to collect, never submitting them twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
from tasks.adapters.settings import Settings
from tests.fixtures.factory import fast_pool, settings_env, settings_in, write_prompts, write_recipe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# "24h" is 2 s here; lines finish within the first half of it
WINDOW = {"batch.window_s": 2, "batch.validating_s": 0.1, "batch.finalizing_s": 0.1}
JUDGES_BATCHED = ("annotation.route=batch", "critique.route=batch", "batch.linger_s=0.2",
                  "batch.poll_s=0.2")
EXPORTS = ("exports/ultrafeedback/ultrafeedback.jsonl", "exports/ultrafeedback/ultrafeedback.parquet")


def run(monkeypatch, settings: Settings, sim, recipe: Path, *overrides: str) -> dict:
    for key, value in settings_env(settings, sim.base_url, fast_pool(recipe.parent)).items():
        monkeypatch.setenv(key, value)
    state = ultrafeedback(UltraFeedbackParams(recipe=str(recipe), overrides=list(overrides)),
                          return_state=True)
    assert state.is_completed(), state
    return state.result().model_dump()


def exports(settings: Settings) -> dict[str, bytes]:
    return {p: (Path(settings.lake) / p).read_bytes() for p in EXPORTS}


def stage_usage(out: dict, stage: str) -> tuple[int, int, float]:
    rows = [u for u in out["usage"] if u["stage"] == stage]
    return (sum(u["prompt_tokens"] for u in rows), sum(u["completion_tokens"] for u in rows),
            sum(u["cost_usd"] for u in rows))


def test_batched_judges_give_the_online_export_at_half_the_judge_cost(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 12)
    recipe = write_recipe(tmp_path, [{"name": "b", "path": str(prompts)}], shard_prompts=6)
    online_sim = make_simulator("unlimited", seed=5, overrides=WINDOW)
    online = run(monkeypatch, settings_in(tmp_path / "online"), online_sim, recipe)
    batch_sim = make_simulator("unlimited", seed=5, overrides=WINDOW)
    batched = run(monkeypatch, settings_in(tmp_path / "batch"), batch_sim, recipe, *JUDGES_BATCHED)

    assert exports(settings_in(tmp_path / "batch")) == exports(settings_in(tmp_path / "online"))
    assert batched["counts"]["pending_calls"] == 0
    assert batched["counts"]["aspect_ratings_parsed"] == online["counts"]["aspect_ratings_parsed"]
    for stage in ("annotation", "critique"):
        assert {u["route"] for u in batched["usage"] if u["stage"] == stage} == {"batch"}
        pt, ct, cost = stage_usage(batched, stage)
        assert (pt, ct) == stage_usage(online, stage)[:2] and pt > 0
        assert cost == pytest.approx(stage_usage(online, stage)[2] / 2, rel=1e-3)
    assert stage_usage(batched, "generation") == stage_usage(online, "generation")
    stats = batch_sim.stats()["batch"]
    assert stats["batches_created"] >= 1 and stats["custom_id_repeats"] == 0


def test_a_run_that_stops_waiting_leaves_calls_pending_and_the_next_collects_them_once(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    recipe = write_recipe(tmp_path, [{"name": "p", "path": str(prompts)}], shard_prompts=6)
    sim = make_simulator("unlimited", seed=6, overrides={**WINDOW, "batch.window_s": 6})
    settings = settings_in(tmp_path / "data")

    first = run(monkeypatch, settings, sim, recipe, *JUDGES_BATCHED, "batch.wait_s=0.5")
    assert first["counts"]["pending_calls"] > 0
    assert first["counts"]["aspect_ratings_parsed"] == 0  # nothing judged landed yet
    created = sim.stats()["batch"]["batches_created"]

    second = run(monkeypatch, settings, sim, recipe, *JUDGES_BATCHED, "batch.wait_s=60")
    assert second["counts"]["pending_calls"] == 0
    assert second["counts"]["aspect_ratings_parsed"] == second["counts"]["aspect_ratings"] > 0
    stats = sim.stats()["batch"]
    # the second run polled and collected the first run's batches: it submitted none
    assert stats["batches_created"] == created and stats["custom_id_repeats"] == 0
    assert second["counts"]["generation_requests_paid"] == 0


def test_sigkill_after_the_batches_are_submitted_then_rerun_submits_nothing_twice(
        prefect_api, make_simulator, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    recipe = write_recipe(tmp_path, [{"name": "k", "path": str(prompts)}], shard_prompts=6)
    sim = make_simulator("unlimited", seed=7, overrides={**WINDOW, "batch.window_s": 8})
    settings = settings_in(tmp_path / "data")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING",
           **settings_env(settings, sim.base_url, fast_pool(tmp_path))}
    sets = [a for o in (*JUDGES_BATCHED, "batch.wait_s=120") for a in ("--set", o)]
    command = [str(Path(sys.executable).parent / "ultraforge"), "run", "ultrafeedback",
               "--recipe", str(recipe), *sets]

    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while sim.stats()["batch"]["batches_created"] < 2:  # annotation's and critique's batches
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the judge batches were never submitted"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # a batch counts its custom_ids once validated: the snapshot waits for that
    while (stats := sim.stats()["batch"])["by_status"].get("validating", 0):
        assert time.monotonic() < deadline, "the judge batches were never validated"
        time.sleep(0.05)
    assert stats["by_status"]["completed"] == 0, "killed too late: a batch had finished"

    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = json.loads(rerun.stdout)["counts"]
    assert counts["pending_calls"] == 0
    assert counts["aspect_ratings_parsed"] == counts["aspect_ratings"] > 0
    assert counts["generation_requests_paid"] == 0  # generation had landed before the kill
    after = sim.stats()["batch"]
    assert after["batches_created"] == 2 and after["custom_id_repeats"] == 0
    assert after["custom_ids"] == stats["custom_ids"]  # every line was in the first run's batches


def test_failed_lines_and_an_expired_batch_are_retried_online_and_nothing_answered_is_repaid(
        prefect_api, make_simulator, monkeypatch, tmp_path):
    # retried online: with `expire_after_fraction` every batch of the simulator expires, so a
    # one-line remainder would never be answered by another batch
    prompts = write_prompts(tmp_path / "prompts.jsonl", 6)
    recipe = write_recipe(tmp_path, [{"name": "f", "path": str(prompts)}], shard_prompts=6)
    sim = make_simulator("unlimited", seed=8, overrides={
        **WINDOW, "batch.line_failure_rate": 0.25, "batch.expire_after_fraction": 0.7})
    out = run(monkeypatch, settings_in(tmp_path / "data"), sim, recipe, *JUDGES_BATCHED,
              "batch.retry=online")
    counts = out["counts"]
    assert counts["pending_calls"] == 0 and counts["aspect_ratings"] > 0
    assert counts["annotation_calls_failed"] == counts["critique_calls_failed"] == 0
    stats = sim.stats()["batch"]
    assert stats["by_status"]["expired"] >= 1 and stats["lines"]["failed"] > 0
    judged = [u for u in out["usage"] if u["stage"] in ("annotation", "critique")]
    online = sum(u["requests"] for u in judged if u["route"] == "online")
    # each judge call was in a batch; those the batch did not answer were paid online once
    assert online > 0 and stats["lines"]["completed"] + online == stats["custom_ids"]
    batch_tokens = sum(u["completion_tokens"] for u in judged if u["route"] == "batch")
    assert batch_tokens == stats["tokens"]["completion_tokens"]
