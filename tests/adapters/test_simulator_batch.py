"""The simulator's Batch API over real HTTP with the official openai client, in compressed time.

Every simulator here runs "24h" in a second (`FAST`); lines are spread over a tenth of it.
"""

from __future__ import annotations

import json
import re
import time

import openai
import pytest

from infra.simulator import SimConfigError, load_config

FAST = {"batch.window_s": 1, "batch.validating_s": 0.05, "batch.finalizing_s": 0.05,
        "batch.cancelling_s": 0.05, "batch.progress": 0.1}
TERMINAL = {"completed", "failed", "expired", "cancelled"}
PLAIN_BLOCK = re.compile(r"#### Output for Text (\d+)\nRating: (?:[1-5]|N/A)\nRationale: [^\n]+")
JUDGE = ("Rate each text.\nFormat:\n#### Output for Text 1\nRating: <1-5 or N/A>\n\n"
         "<instruction> Bake bread.\n<text 1> Knead, prove, bake.\n<text 2> Buy some.\n<text 3> Toast it.")


def client(sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)


def line(custom_id: str, content: str, model: str = "gpt-4o-mini", **params) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **params}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def lines(n: int, prefix: str = "r") -> list[dict]:
    return [line(f"{prefix}{i}", f"Explain topic number {i}.", max_tokens=60) for i in range(n)]


def upload(c: openai.OpenAI, rows: list[dict | str]):
    """A batch input file; a str row is written as is (for malformed lines)."""
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()
    return c.files.create(file=("input.jsonl", data), purpose="batch")


def submit(c: openai.OpenAI, rows: list[dict | str], **kwargs):
    return c.batches.create(input_file_id=upload(c, rows).id, endpoint="/v1/chat/completions",
                            completion_window="24h", **kwargs)


def wait(c: openai.OpenAI, batch_id: str, until=TERMINAL, timeout: float = 10.0):
    """Poll until the status is in `until`; the batch and every status seen, in order."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        batch = c.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in until:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.01)


def rows_of(c: openai.OpenAI, file_id: str | None) -> list[dict]:
    return [json.loads(t) for t in c.files.content(file_id).text.splitlines()] if file_id else []


def test_batch_goes_validating_in_progress_finalizing_completed_with_request_counts(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.validating_s": 0.2, "batch.finalizing_s": 0.2,
                                           "batch.progress": 0.3})
    c = client(sim)
    created = submit(c, lines(5), metadata={"stage": "judge"})
    assert created.status == "validating" and created.request_counts.total == 0
    batch, seen = wait(c, created.id)
    assert seen == ["validating", "in_progress", "finalizing", "completed"]
    assert batch.request_counts.model_dump() == {"total": 5, "completed": 5, "failed": 0}
    assert batch.metadata == {"stage": "judge"} and batch.model == "gpt-4o-mini"
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.expires_at == batch.created_at + 1 and batch.error_file_id is None
    assert c.files.retrieve(batch.output_file_id).purpose == "batch_output"
    stats = sim.stats()
    assert stats["batch"]["files_uploaded"] == 1 and stats["batch"]["batches_created"] == 1
    assert stats["batch"]["by_status"]["completed"] == 1
    assert stats["batch"]["lines"] == {"completed": 5, "failed": 0, "expired": 0, "cancelled": 0}


def test_output_lines_carry_custom_id_and_usage_and_a_judge_body_equals_the_online_reply(make_simulator):
    sim = make_simulator(seed=7, overrides=FAST)
    c = client(sim)
    judge = line("judge", JUDGE, max_tokens=300)
    batch, _ = wait(c, submit(c, [judge, *lines(4)]).id)
    rows = {r["custom_id"]: r for r in rows_of(c, batch.output_file_id)}
    assert set(rows) == {"judge", "r0", "r1", "r2", "r3"}
    for row in rows.values():
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200
        usage = row["response"]["body"]["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    batched = rows["judge"]["response"]["body"]
    online = c.chat.completions.with_raw_response.create(**judge["body"]).http_response.json()
    assert batched.pop("created") <= online.pop("created")
    assert batched == online  # same id, choices and usage: the online route's first attempt
    text = batched["choices"][0]["message"]["content"]
    assert [int(n) for n in PLAIN_BLOCK.findall(text)] == [1, 2, 3]
    assert sim.stats()["batch"]["tokens"] == {
        "prompt_tokens": sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in rows.values()),
        "completion_tokens": sum(r["response"]["body"]["usage"]["completion_tokens"] for r in rows.values()),
    }


def test_same_file_and_seed_give_the_same_lines_in_the_same_shuffled_order(make_simulator):
    def run(seed: int) -> list[tuple[str, dict]]:
        c = client(make_simulator(seed=seed, overrides=FAST))
        batch, _ = wait(c, submit(c, lines(10)).id)
        return [(r["custom_id"], r["response"]["body"]["choices"]) for r in rows_of(c, batch.output_file_id)]

    first = run(3)
    assert run(3) == first
    assert [cid for cid, _ in first] != [f"r{i}" for i in range(10)]  # the API does not keep input order


def test_batch_settings_take_dotted_overrides():
    config = load_config("tier3", overrides=["batch.window_s=5", "batch.line_failure_statuses=[400, 503]"])
    assert config.batch.window_s == 5 and config.batch.line_failure_statuses == [400, 503]
    assert config.batch.max_requests == 50_000 and config.batch.max_file_bytes == 200_000_000
    with pytest.raises(SimConfigError, match="batch.line_failure_statuses"):
        load_config(overrides=["batch.line_failure_statuses=[418]"])


def test_batch_lines_skip_online_rate_limits_and_leave_online_stats_untouched(make_simulator):
    sim = make_simulator("tier1", overrides=FAST | {"limits.rpm": 1, "limits.tpm": 1})
    before = sim.stats()
    c = client(sim)
    batch, _ = wait(c, submit(c, lines(20)).id)
    assert batch.request_counts.completed == 20
    after = sim.stats()
    assert after.pop("batch")["lines"]["completed"] == 20
    before.pop("batch")
    assert after == before and after["requests"] == 0


@pytest.mark.parametrize("placement", ["error_file", "output_file"])
def test_failed_lines_carry_their_status_code_and_are_counted_as_failed(make_simulator, placement):
    sim = make_simulator(overrides=FAST | {"batch.line_failure_rate": 0.5,
                                           "batch.line_failure_statuses": [400, 500],
                                           "batch.failed_lines_in": placement})
    c = client(sim)
    batch, _ = wait(c, submit(c, lines(30)).id)
    output, errors = rows_of(c, batch.output_file_id), rows_of(c, batch.error_file_id)
    failed = [r for r in output + errors if r["response"]["status_code"] != 200]
    assert (errors == failed) if placement == "error_file" else (errors == [] and batch.error_file_id is None)
    assert 0 < len(failed) < 30 and batch.status == "completed"
    counts = {"total": 30, "completed": 30 - len(failed), "failed": len(failed)}
    assert batch.request_counts.model_dump() == counts
    for row in failed:
        status, error = row["response"]["status_code"], row["response"]["body"]["error"]
        assert row["error"] is None and status in (400, 500)
        assert error["type"] == ("invalid_request_error" if status == 400 else "server_error")
    assert sim.stats()["batch"]["lines"]["failed"] == len(failed)


def test_resubmitted_failed_lines_get_a_fresh_draw_and_count_as_custom_id_repeats(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.line_failure_rate": 0.5})
    c = client(sim)
    rows = lines(20)
    first, _ = wait(c, submit(c, rows).id)
    failed = {r["custom_id"] for r in rows_of(c, first.error_file_id)}
    assert failed
    second, _ = wait(c, submit(c, [r for r in rows if r["custom_id"] in failed]).id)
    assert second.request_counts.completed > 0
    stats = sim.stats()["batch"]
    assert stats["custom_id_repeats"] == len(failed) and stats["custom_ids"] == 20
    assert stats["repeated_custom_ids"] == dict.fromkeys(failed, 2)


def test_custom_id_repeats_ignore_batches_that_failed_validation(make_simulator):
    sim = make_simulator(overrides=FAST)
    c = client(sim)
    a, b, cc = (line(cid, f"Explain {cid}.") for cid in "abc")
    wait(c, submit(c, [a, b]).id)
    wait(c, submit(c, [b, cc]).id)
    failed, _ = wait(c, submit(c, [a, "not json"]).id)
    assert failed.status == "failed"
    stats = sim.stats()["batch"]
    assert stats["custom_ids"] == 3 and stats["custom_id_repeats"] == 1
    assert stats["repeated_custom_ids"] == {"b": 2}
    sim.reset()
    assert sim.stats()["batch"]["custom_ids"] == 0 and c.batches.list().data == []


def test_expiry_after_a_share_returns_done_lines_and_the_rest_as_batch_expired(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.expire_after_fraction": 0.4})
    c = client(sim)
    batch, seen = wait(c, submit(c, lines(10)).id)
    assert seen[-1] == "expired" and batch.expired_at is not None and batch.completed_at is None
    output, errors = rows_of(c, batch.output_file_id), rows_of(c, batch.error_file_id)
    assert len(output) == 4 and all(r["response"]["status_code"] == 200 for r in output)
    assert len(errors) == 6 and all(r["response"] is None and r["error"]["code"] == "batch_expired"
                                    for r in errors)
    assert {r["custom_id"] for r in output + errors} == {f"r{i}" for i in range(10)}
    assert batch.request_counts.model_dump() == {"total": 10, "completed": 4, "failed": 0}
    billed = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in output)
    assert batch.usage.output_tokens == billed  # the done lines are billed
    assert sim.stats()["batch"]["lines"] == {"completed": 4, "failed": 0, "expired": 6, "cancelled": 0}


def test_a_batch_slower_than_its_window_expires_part_done(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.window_s": 0.6, "batch.progress": 2})
    c = client(sim)
    batch, _ = wait(c, submit(c, lines(10)).id)
    done = batch.request_counts.completed
    assert batch.status == "expired" and 0 < done < 10
    assert len(rows_of(c, batch.error_file_id)) == 10 - done


def test_validation_failure_names_each_bad_line(make_simulator):
    sim = make_simulator(overrides=FAST)
    c = client(sim)
    no_id = line("x", "hi")
    del no_id["custom_id"]
    rows = [line("a", "hi"), no_id, line("a", "again"), {**line("u", "hi"), "url": "/v1/embeddings"},
            '{"custom_id": "broken"', line("s", "hi", stream=True), line("m", "hi", model="gpt-4o")]
    batch, seen = wait(c, submit(c, rows).id)
    assert seen[-1] == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    assert [(e.line, e.code, e.param) for e in batch.errors.data] == [
        (2, "missing_required_parameter", "custom_id"),
        (3, "duplicate_custom_id", "custom_id"),
        (4, "invalid_url", "url"),
        (5, "invalid_json_line", None),
        (6, "streaming_unsupported", "body.stream"),
        (7, "mismatched_model", "body.model"),
    ]
    assert batch.request_counts.total == 0 and batch.output_file_id is None and batch.error_file_id is None
    assert sim.stats()["batch"]["custom_ids"] == 0


def test_fail_validation_setting_fails_a_valid_batch(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.fail_validation": True})
    c = client(sim)
    batch, _ = wait(c, submit(c, lines(2)).id)
    assert batch.status == "failed" and batch.errors.data[0].code == "invalid_request"


def test_an_oversized_file_gets_a_400_at_upload(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.max_file_bytes": 1000})
    c = client(sim)
    upload(c, lines(2))  # about 300 bytes
    with pytest.raises(openai.BadRequestError) as info:
        upload(c, lines(10))
    assert info.value.status_code == 400 and info.value.code == "file_too_large"
    assert sim.stats()["batch"]["files_uploaded"] == 1


def test_more_requests_than_the_limit_fail_the_batch_naming_the_limit(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.max_requests": 3})
    c = client(sim)
    assert wait(c, submit(c, lines(3)).id)[0].status == "completed"
    batch, _ = wait(c, submit(c, lines(4)).id)
    assert batch.status == "failed"
    (error,) = batch.errors.data
    assert error.code == "too_many_requests"
    assert "4 requests" in error.message and "3 allowed" in error.message


def test_enqueued_tokens_are_a_per_model_pool_of_running_batches(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.enqueued_tokens": 100, "batch.progress": 0.8})
    c = client(sim)
    running = submit(c, lines(6))  # ~60 prompt tokens
    wait(c, running.id, until={"in_progress"})
    crowded, _ = wait(c, submit(c, lines(6, prefix="s")).id)
    assert crowded.status == "failed" and crowded.errors.data[0].code == "token_limit_exceeded"
    other = submit(c, [line(f"o{i}", f"Explain topic number {i}.", model="gpt-4o") for i in range(6)])
    assert wait(c, other.id)[0].status == "completed"
    assert wait(c, running.id)[0].status == "completed"


def test_cancel_goes_cancelling_then_cancelled_keeping_done_lines(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.progress": 1, "batch.cancelling_s": 0.3})
    c = client(sim)
    batch = submit(c, lines(10))
    while c.batches.retrieve(batch.id).request_counts.completed < 2:
        time.sleep(0.01)
    assert c.batches.cancel(batch.id).status == "cancelling"
    batch, seen = wait(c, batch.id)
    assert seen == ["cancelling", "cancelled"] and batch.cancelling_at <= batch.cancelled_at
    done = batch.request_counts.completed
    assert 2 <= done < 10 and len(rows_of(c, batch.output_file_id)) == done
    errors = rows_of(c, batch.error_file_id)
    assert len(errors) == 10 - done and {r["error"]["code"] for r in errors} == {"batch_cancelled"}
    assert c.batches.cancel(batch.id).status == "cancelled"  # cancelling again is allowed
    assert sim.stats()["batch"]["lines"]["cancelled"] == 10 - done
    failed, _ = wait(c, submit(c, ["not json"]).id)
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(failed.id)


def test_list_pages_newest_first_with_after_and_has_more(make_simulator):
    sim = make_simulator(overrides=FAST | {"batch.fail_validation": True})
    c = client(sim)
    file_id = upload(c, lines(1)).id
    ids = [c.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                            completion_window="24h").id for _ in range(5)]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[:2:-1] and page.has_more
    assert (page.first_id, page.last_id) == (ids[4], ids[3])
    rest = c.batches.list(limit=2, after=page.last_id)
    assert [b.id for b in rest.data] == [ids[2], ids[1]] and rest.has_more
    assert [b.id for b in c.batches.list(limit=2)] == ids[::-1]  # the client follows `after`
    last = c.batches.list(limit=2, after=ids[1])
    assert [b.id for b in last.data] == [ids[0]] and not last.has_more


def test_unknown_ids_get_404_and_an_unknown_input_file_fails_the_batch(make_simulator):
    sim = make_simulator(overrides=FAST)
    c = client(sim)
    for call in (lambda: c.batches.retrieve("batch_nope"), lambda: c.batches.cancel("batch_nope"),
                 lambda: c.files.retrieve("file-nope"), lambda: c.files.content("file-nope"),
                 lambda: c.files.delete("file-nope"), lambda: c.batches.list(after="batch_nope")):
        with pytest.raises(openai.NotFoundError):
            call()
    batch = c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions",
                             completion_window="24h")
    batch, _ = wait(c, batch.id)
    assert batch.status == "failed" and batch.errors.data[0].param == "input_file_id"


def test_bad_create_parameters_and_uploads_get_400(make_simulator):
    sim = make_simulator(overrides=FAST)
    c = client(sim)
    file_id = upload(c, lines(1)).id
    for params, param in (({"completion_window": "1h"}, "completion_window"),
                          ({"endpoint": "/v1/embeddings"}, "endpoint"),
                          ({"metadata": {"tags": ["a"]}}, "metadata.tags")):
        create = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        with pytest.raises(openai.BadRequestError) as info:
            c.batches.create(**create | params)
        assert info.value.body["param"] == param
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("input.txt", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        c.files.create(file=("input.jsonl", b"{}\n"), purpose="fine-tune")
    assert c.files.delete(file_id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(file_id)
