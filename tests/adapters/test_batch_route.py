"""The batch route against the simulator's Batch API over real HTTP, in compressed time.

Every simulator here runs "24h" in a second; a batch finishes in about 0.2 s. A "rerun after a
kill" is a second Gateway and BatchRoute on the same lake and journal file. Most tests here keep
failed lines for the next call (`retry: none`, what `POLL` sets); the retry tests set it.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

import openai
import pytest

from tasks.adapters.errors import ConfigError, FatalAPIError
from tasks.adapters.lake import Lake
from tasks.adapters.llm.batch import REGISTRY, BatchCollector, BatchRecord, BatchRoute, BatchSettings, Pending
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import Journal
from tasks.core.chat import ChatRequest, ChatResult
from tasks.core.pool import PoolConfig
from tasks.core.usage import usage_of

FAST = {"batch.window_s": 1, "batch.validating_s": 0.05, "batch.finalizing_s": 0.05,
        "batch.progress": 0.1}
POLL = BatchSettings(poll_s=0.02, retry="none")


class Killed(Exception):
    """Stands for the process dying at that point."""


def make_pool(base_url: str) -> PoolConfig:
    return PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "timeout_s": 10}},
        "models": {"m": {"endpoint": "sim", "sampling": {"max_tokens": 64},
                         "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}}},
    })


def requests(n: int, prefix: str = "q", stage: str = "judge") -> list[ChatRequest]:
    return [ChatRequest(model="m", messages=({"role": "user", "content": f"{prefix} {i}?"},),
                        stage=stage, route="batch") for i in range(n)]


def make_route(sim, tmp_path: Path, settings: BatchSettings = POLL) -> BatchRoute:
    """A fresh process's route: its own gateway and journal object, the same files."""
    gateway = Gateway(make_pool(sim.base_url), Journal(tmp_path / "journal.sqlite"), {})
    return BatchRoute(gateway, Lake(str(tmp_path / "lake")), settings)


def complete(route: BatchRoute, reqs: list[ChatRequest],
             wait_s: float = 10.0) -> list[ChatResult | Pending]:
    async def go():
        try:
            return await route.complete_all(reqs, wait_s=wait_s)
        finally:
            await route.gateway.aclose()
    return asyncio.run(go())


def online(sim, reqs: list[ChatRequest]) -> list[ChatResult]:
    """The online route's first answers (its attempt numbers are apart from the batch's)."""
    gateway = Gateway(make_pool(sim.base_url), None, {})

    async def go():
        try:
            return await gateway.complete_all([r.model_copy(update={"route": "online"}) for r in reqs])
        finally:
            await gateway.aclose()
    return asyncio.run(go())


def records(tmp_path: Path) -> list[BatchRecord]:
    lake = Lake(str(tmp_path / "lake"))
    return [BatchRecord.model_validate_json(lake.read_bytes(f"{REGISTRY}/sim/{name}"))
            for name in lake.ls(f"{REGISTRY}/sim") if name.endswith(".json")]


def answers(results) -> list[tuple]:
    return [(r.text, r.finish_reason, r.usage) for r in results]


def test_batched_answers_equal_online_ones_are_journaled_sent_once_in_several_files_and_cost_half(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST)
    reqs = requests(7)
    route = make_route(sim, tmp_path, BatchSettings(max_requests=3, poll_s=0.02))
    *results, repeat = complete(route, reqs + reqs[:1])
    assert all(isinstance(r, ChatResult) and r.ok and not r.from_journal for r in results)
    assert answers(results) == answers(online(sim, reqs))
    assert repeat.from_journal and repeat.text == results[0].text  # sent once, replayed
    assert len(route.journal) == 7
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 3 and stats["custom_id_repeats"] == 0  # 3 + 3 + 1 lines
    assert sorted(len(r.custom_ids) for r in records(tmp_path)) == [1, 3, 3]
    assert all(r.status == "completed" and r.collected_at for r in records(tmp_path))

    again = complete(make_route(sim, tmp_path), reqs)
    assert all(r.from_journal for r in again) and answers(again) == answers(results)
    assert sim.stats()["batch"]["batches_created"] == 3

    [usage] = usage_of("judge", results, route.pool.cost)
    assert usage.prompt_tokens == stats["tokens"]["prompt_tokens"] > 0
    at_online = sum(route.pool.cost("m", r.usage.prompt_tokens, r.usage.completion_tokens) for r in results)
    at_batch = sum(route.pool.cost("m", r.usage.prompt_tokens, r.usage.completion_tokens, route="batch")
                   for r in results)
    assert at_batch == pytest.approx(at_online / 2) and at_online > 0


def test_files_are_cut_so_none_exceeds_max_file_bytes(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST)
    route = make_route(sim, tmp_path, BatchSettings(max_file_bytes=400, poll_s=0.02))
    results = complete(route, requests(6))
    assert all(r.ok for r in results)
    lake = Lake(str(tmp_path / "lake"))
    sizes = [len(lake.read_bytes(f"{REGISTRY}/sim/{r.input_key}.jsonl")) for r in records(tmp_path)]
    assert len(sizes) == sim.stats()["batch"]["batches_created"] > 1
    assert max(sizes) <= 400


def test_a_request_too_big_for_any_file_is_a_config_error_naming_stage_and_endpoint(simulator, tmp_path):
    route = make_route(simulator, tmp_path, BatchSettings(max_file_bytes=50))
    with pytest.raises(ConfigError, match="stage 'judge', endpoint 'sim'.*max_file_bytes"):
        complete(route, requests(1))
    assert records(tmp_path) == [] and simulator.stats()["batch"]["files_uploaded"] == 0


def test_pending_when_wait_runs_out_then_a_later_call_collects_the_same_batch(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.validating_s": 0.5})
    reqs = requests(4)
    route = make_route(sim, tmp_path)
    pending = complete(route, reqs, wait_s=0)
    [record] = records(tmp_path)
    assert all(isinstance(p, Pending) for p in pending)
    assert {p.key for p in pending} == set(record.custom_ids)
    assert {(p.batch_id, p.record, p.status) for p in pending} == {
        (record.batch_id, record.name, "validating")}
    assert len(route.journal) == 0

    results = complete(route, reqs)
    assert all(isinstance(r, ChatResult) and r.ok for r in results)
    assert answers(results) == answers(online(sim, reqs))
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 1 and stats["files_uploaded"] == 1


def test_a_rerun_after_a_kill_polls_the_open_batch_without_submitting_again(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.progress": 0.3})
    reqs = requests(5)
    assert all(isinstance(p, Pending) for p in complete(make_route(sim, tmp_path), reqs, wait_s=0.1))
    results = complete(make_route(sim, tmp_path), reqs)  # the "rerun"
    assert answers(results) == answers(online(sim, reqs))
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 1 and stats["files_uploaded"] == 1
    assert stats["custom_id_repeats"] == 0 and stats["custom_ids"] == 5


def _kill_before_upload(route: BatchRoute) -> None:
    async def killed(record, data):
        raise Killed
    route._upload = killed


def _kill_when_saving(route: BatchRoute, when) -> None:
    save = route._save

    async def killing(record: BatchRecord) -> None:
        if when(record):
            raise Killed
        await save(record)
    route._save = killing


@pytest.mark.parametrize(("kill", "left", "uploads"), [
    (_kill_before_upload, {"input_file_id": None, "batch_id": None}, 1),
    # the upload happened but its id was not written: uploaded again, never batched twice
    (partial(_kill_when_saving, when=lambda r: r.input_file_id and not r.batch_id),
     {"input_file_id": None, "batch_id": None}, 2),
    # the batch was created but its id was not written: found by its input file and adopted
    (partial(_kill_when_saving, when=lambda r: r.batch_id), {"batch_id": None}, 1),
], ids=["after_record_before_upload", "after_upload_before_file_id", "after_create_before_batch_id"])
def test_a_run_killed_mid_submission_is_completed_by_the_rerun_without_duplicates(
        make_simulator, tmp_path, kill, left, uploads):
    sim = make_simulator(overrides=FAST)
    reqs = requests(4)
    route = make_route(sim, tmp_path)
    kill(route)
    with pytest.raises(Killed):
        complete(route, reqs)
    [record] = records(tmp_path)
    assert record.status == "unsubmitted" and record.model_dump(include=set(left)) == left

    results = complete(make_route(sim, tmp_path), reqs)
    assert answers(results) == answers(online(sim, reqs))
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 1 and stats["files_uploaded"] == uploads
    assert stats["custom_id_repeats"] == 0
    [record] = records(tmp_path)
    assert record.batch_id and record.collected_at


def test_failed_lines_come_back_as_errors_and_only_they_go_into_a_new_batch(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.line_failure_rate": 0.4})
    reqs = requests(10)
    first = complete(make_route(sim, tmp_path), reqs)
    failed = {r.key for r in first if not r.ok}
    assert 0 < len(failed) < 10
    assert all("HTTP 500" in r.error and "judge" in r.error for r in first if not r.ok)

    second = complete(make_route(sim, tmp_path), reqs)
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 2
    assert set(stats["repeated_custom_ids"]) == failed  # the answered lines were not resubmitted
    assert all(r.from_journal for r in second if r.key not in failed)
    assert not any(r.from_journal for r in second if r.key in failed)
    # every answered line paid once: what the endpoint answered is what came back as paid
    paid = [r for r in first + second if r.ok and not r.from_journal]
    assert sum(r.usage.completion_tokens for r in paid) == stats["tokens"]["completion_tokens"]


def test_an_expired_batch_keeps_its_answered_lines_paid_once_and_resubmits_only_the_rest(
        make_simulator, tmp_path):
    expiring = make_simulator(overrides=FAST | {"batch.expire_after_fraction": 0.5})
    reqs = requests(8)
    first = complete(make_route(expiring, tmp_path), reqs)
    done = {r.key for r in first if r.ok}
    assert len(done) == 4 and expiring.stats()["batch"]["by_status"]["expired"] == 1
    assert all("expired" in r.error and "batch_expired" in r.error for r in first if not r.ok)
    [record] = records(tmp_path)
    assert record.status == "expired" and record.collected_at

    # the same endpoint once its trouble is over (the simulator's faults are fixed per process)
    healthy = make_simulator(overrides=FAST)
    second = complete(make_route(healthy, tmp_path), reqs)
    assert all(r.ok for r in second)
    assert {r.key for r in second if r.from_journal} == done
    stats = healthy.stats()["batch"]
    assert stats["batches_created"] == 1 and stats["custom_ids"] == 4
    assert answers(second) == answers(online(healthy, reqs))  # both simulators have seed 0
    tokens = expiring.stats()["batch"]["tokens"]["completion_tokens"] + stats["tokens"]["completion_tokens"]
    assert tokens == sum(r.usage.completion_tokens for r in first + second if r.ok and not r.from_journal)


def test_a_batch_that_fails_validation_raises_naming_batch_endpoint_and_error_and_frees_its_keys(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.fail_validation": True})
    with pytest.raises(FatalAPIError) as info:
        complete(make_route(sim, tmp_path), requests(3))
    [record] = records(tmp_path)
    message = str(info.value)
    assert record.status == "failed" and record.collected_at
    assert f"batch {record.batch_id}" in message and "endpoint 'sim'" in message
    assert "stage 'judge'" in message and "failed validation: invalid_request" in message

    with pytest.raises(FatalAPIError):  # a later call submits the keys again, in a new batch
        complete(make_route(sim, tmp_path), requests(3))
    assert sorted(r.name[-2:] for r in records(tmp_path)) == ["-0", "-1"]
    assert sim.stats()["batch"]["batches_created"] == 2


def test_an_upload_refused_as_too_large_raises_naming_stage_and_endpoint_and_frees_its_keys(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.max_file_bytes": 400})
    with pytest.raises(FatalAPIError, match=r"endpoint 'sim'.*stage 'judge'.*refused as too large"):
        complete(make_route(sim, tmp_path), requests(6))
    [record] = records(tmp_path)
    assert record.status == "refused" and record.input_file_id is None

    smaller = BatchSettings(max_file_bytes=400, poll_s=0.02)
    results = complete(make_route(sim, tmp_path, smaller), requests(6))
    assert all(r.ok for r in results)
    assert sim.stats()["batch"]["custom_id_repeats"] == 0


def test_a_fatal_batch_error_reaches_every_caller_and_stops_the_gateway(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.fail_validation": True})
    route = make_route(sim, tmp_path)
    collector = BatchCollector(route)
    collector.configure(wait_s=10, linger_s=0.05, poll_s=0.02, retry="none", max_resubmits=0)

    async def go():
        try:  # two callers in one round, as two prompt pipelines of a block would be
            return await asyncio.gather(collector.complete_all(requests(2, "a")),
                                        collector.complete_all(requests(2, "b")),
                                        return_exceptions=True)
        finally:
            await route.gateway.aclose()
    outcomes = asyncio.run(go())
    assert all(isinstance(o, FatalAPIError) for o in outcomes)
    assert route.gateway.fatal is outcomes[0]  # online calls of other shards stop too


def test_a_round_stops_waiting_once_another_call_stopped_the_run(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.window_s": 30})
    route = make_route(sim, tmp_path)

    async def go():
        async def stop_soon():
            await asyncio.sleep(0.3)
            route.gateway.abort(FatalAPIError("sim", "quota exhausted elsewhere"))
        stopper = asyncio.create_task(stop_soon())
        try:
            started = time.monotonic()
            with pytest.raises(FatalAPIError, match="quota exhausted elsewhere"):
                await route.complete_all(requests(3), wait_s=30)
            return time.monotonic() - started
        finally:
            await stopper
            await route.gateway.aclose()
    assert asyncio.run(go()) < 3  # not the 30 s wait


def paid_tokens(results) -> int:
    return sum(r.usage.completion_tokens for r in results if r.ok and not r.from_journal)


def test_failed_lines_are_retried_in_new_batches_within_the_call_never_repaying_answered_ones(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.line_failure_rate": 0.4})
    retrying = BatchSettings(poll_s=0.02, retry="batch", max_resubmits=6)
    results = complete(make_route(sim, tmp_path, retrying), requests(10))
    assert all(r.ok for r in results)
    stats = sim.stats()["batch"]
    assert stats["batches_created"] > 1  # the failed lines went into later batches
    assert stats["custom_ids"] == 10
    # each key answered once; only lines that had failed were sent again
    assert stats["lines"]["completed"] == 10 and stats["lines"]["failed"] > 0
    assert 0 < stats["custom_id_repeats"] <= stats["lines"]["failed"]
    assert paid_tokens(results) == stats["tokens"]["completion_tokens"]
    stages = {r.stage for r in records(tmp_path)}
    assert stages == {"judge"}


def test_the_expired_rest_of_a_batch_is_retried_online_when_the_recipe_says_so(make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.expire_after_fraction": 0.5})
    results = complete(make_route(sim, tmp_path, BatchSettings(poll_s=0.02, retry="online")),
                       requests(8))
    assert all(r.ok for r in results)
    assert sorted(r.route for r in results) == ["batch"] * 4 + ["online"] * 4
    stats = sim.stats()
    assert stats["batch"]["batches_created"] == 1 and stats["requests"] == 4  # 4 sent online
    assert stats["ok_repeats"] == 0
    online_tokens = sum(r.usage.completion_tokens for r in results if r.route == "online")
    assert paid_tokens(results) == stats["batch"]["tokens"]["completion_tokens"] + online_tokens


def test_a_batch_the_endpoint_no_longer_knows_is_lost_and_its_lines_resubmitted(make_simulator, tmp_path):
    first = make_simulator(overrides=FAST | {"batch.validating_s": 5})
    reqs = requests(3)
    assert all(isinstance(p, Pending) for p in complete(make_route(first, tmp_path), reqs, wait_s=0))
    # another endpoint process under the same name: it has never seen that batch (HTTP 404)
    second = make_simulator(overrides=FAST)
    results = complete(make_route(second, tmp_path, BatchSettings(poll_s=0.02)), reqs)
    assert all(r.ok for r in results)
    lost = [r for r in records(tmp_path) if r.status == "lost"]
    assert len(lost) == 1 and "no longer knows batch" in lost[0].problem and lost[0].collected_at
    assert second.stats()["batch"]["batches_created"] == 1


def test_a_call_switched_to_online_while_its_batch_runs_collects_the_batch_instead_of_paying_again(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST | {"batch.validating_s": 0.5})
    reqs = requests(3)
    assert all(isinstance(p, Pending) for p in complete(make_route(sim, tmp_path), reqs, wait_s=0))
    route = make_route(sim, tmp_path)
    collector = BatchCollector(route)
    collector.configure(wait_s=10, linger_s=0.05, poll_s=0.02, retry="none", max_resubmits=0)
    route.gateway.batches = collector

    async def go():
        try:
            return await route.gateway.complete_all([r.model_copy(update={"route": "online"})
                                                     for r in reqs])
        finally:
            await route.gateway.aclose()
    results = asyncio.run(go())
    assert all(r.ok and r.route == "batch" for r in results), results
    stats = sim.stats()
    assert stats["requests"] == 0 and stats["batch"]["batches_created"] == 1


def test_a_batch_refused_for_the_enqueued_token_queue_is_resubmitted_once_the_queue_drains(
        make_simulator, tmp_path):
    sizing = make_simulator(overrides=FAST)
    complete(make_route(sizing, tmp_path / "sizing", BatchSettings(max_requests=3, poll_s=0.02)),
             requests(3))
    one_batch = sizing.stats()["batch"]["tokens"]["prompt_tokens"]  # tokens of 3 lines
    sim = make_simulator(overrides=FAST | {"batch.enqueued_tokens": one_batch})
    route = make_route(sim, tmp_path, BatchSettings(max_requests=3, poll_s=0.02))
    results = complete(route, requests(6))  # two files of 3: only one fits the queue at a time
    assert all(r.ok for r in results)
    stats = sim.stats()["batch"]
    assert stats["by_status"]["failed"] == 1 and stats["by_status"]["completed"] == 2
    assert stats["custom_id_repeats"] == 0  # a failed validation answers no line
    failed = [r for r in records(tmp_path) if r.status == "failed"]
    assert len(failed) == 1 and failed[0].problem.startswith("token_limit_exceeded")


def test_a_missing_output_file_is_an_error_naming_batch_stage_and_file_and_its_lines_are_retried(
        make_simulator, tmp_path):
    sim = make_simulator(overrides=FAST)
    landed = complete(make_route(sim, tmp_path), requests(2, "landed"))  # earlier answers
    reqs = requests(3)
    assert all(isinstance(p, Pending) for p in complete(make_route(sim, tmp_path), reqs, wait_s=0))
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
    [record] = [r for r in records(tmp_path) if not r.collected_at]
    deadline = time.monotonic() + 10
    while (batch := client.batches.retrieve(record.batch_id)).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.files.delete(batch.output_file_id)  # gone before anyone collected it

    results = complete(make_route(sim, tmp_path), reqs)  # retry "none": the errors come back
    assert all(not r.ok for r in results)
    assert all(f"batch {record.batch_id} (completed, stage 'judge')" in r.error
               and f"file {batch.output_file_id} not found" in r.error for r in results)
    again = complete(make_route(sim, tmp_path), requests(2, "landed"))
    assert all(r.from_journal for r in again) and answers(again) == answers(landed)  # none lost

    retried = complete(make_route(sim, tmp_path, BatchSettings(poll_s=0.02)), reqs)
    assert all(r.ok for r in retried) and sim.stats()["batch"]["batches_created"] == 3


def test_collector_rounds_overlap_and_a_key_two_rounds_share_is_submitted_and_billed_once(
        make_simulator, tmp_path):
    # a batch takes about 2.4 s: its lines are answered over 60% of a 4 s window
    sim = make_simulator(overrides=FAST | {"batch.window_s": 4, "batch.progress": 0.6})
    route = make_route(sim, tmp_path)
    collector = BatchCollector(route)
    collector.configure(wait_s=20, linger_s=0.05, poll_s=0.02, retry="none", max_resubmits=0)
    first, second = requests(3, "a"), requests(2, "b") + requests(1, "a")  # "a 0" in both

    async def go():
        try:
            one = asyncio.create_task(collector.complete_all(first))
            await asyncio.sleep(0.3)  # the first round's batch is running by now
            two = asyncio.create_task(collector.complete_all(second))
            started = time.monotonic()
            while sim.stats()["batch"]["batches_created"] < 2:
                await asyncio.sleep(0.02)
            submitted_after = time.monotonic() - started
            return await one, await two, submitted_after
        finally:
            await route.gateway.aclose()
    one, two, submitted_after = asyncio.run(go())
    # the second round did not wait for the first batch to finish (about 2 s more; the bound
    # leaves room for a loaded machine)
    assert submitted_after < 1.2
    assert all(r.ok for r in one + two)
    stats = sim.stats()["batch"]
    assert stats["batches_created"] == 2 and stats["custom_id_repeats"] == 0
    assert stats["custom_ids"] == 5
    shared = [r for r in one + two if r.key == one[0].key]
    assert len(shared) == 2 and sum(not r.from_journal for r in shared) == 1  # billed once
    assert shared[0].text == shared[1].text
