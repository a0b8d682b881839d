"""Lake rows of the paid stages: the chosen reply, errors only where nothing parsed, reply metadata
kept beside every parsed value, and failures as their own rows."""

import json

from tasks.core.chat import ChatResult, Usage
from tasks.core.ultrafeedback.intake import to_prompt
from tasks.core.ultrafeedback.judge import (
    annotation_job,
    critique_job,
    parse_annotation_reply,
)
from tasks.core.ultrafeedback.outcomes import (
    Attempts,
    annotation_rows,
    completion_row,
    critique_row,
)
from tasks.core.ultrafeedback.parse import parse_critique
from tasks.core.ultrafeedback.plan import plan_prompt
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe

RECIPE = UltraFeedbackRecipe(sources=[{"name": "s", "path": "x"}])
PROMPT = to_prompt("s", 1, {"instruction": "Name a prime.", "source": "sharegpt"}, source=None,
                   max_chars=100)


def block(k, rating="4"):
    return f"#### Output for Text {k}\nRating: {rating}\nRationale: Text {k} is fine."


def result(text, key, finish="stop", tokens=(120, 40), latency=0.5):
    return ChatResult(key=key, model="gpt-4-judge", api_model="gpt-4", endpoint="local",
                      text=text, finish_reason=finish, latency_s=latency, attempts=1,
                      usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]))


def attempts_for(job, parse, *texts):
    out = Attempts()
    for i, text in enumerate(texts):
        out.results.append(result(text, f"key-{i}", tokens=(100 + i, 10 + i), latency=i / 10))
        out.parses.append(parse(job, text))
    return out


def test_complete_reply_wins_and_parsed_rows_carry_no_error():
    comps = [("c0", "2"), ("c1", "3"), ("c2", "9")]
    job = annotation_job(0, RECIPE.annotation, "instruction_following", PROMPT, comps)
    # attempt 0: all three texts parsed, plus a block for a text that does not exist
    extra = "\n\n".join([block(1), block(2), block(3), block(4)])
    complete = "\n\n".join([block(1, "5"), block(2, "5"), block(3, "5")])
    rows = annotation_rows(job, attempts_for(job, parse_annotation_reply, extra, complete))
    assert [r["rating"] for r in rows] == ["5", "5", "5"]
    assert all(r["error"] is None for r in rows)
    assert rows[0]["raw"] == complete and rows[0]["request_key"] == "key-1"
    assert (rows[0]["calls"], rows[0]["parse_failures"]) == (2, 1)


def test_unparsed_text_gets_its_error_and_the_replys_but_parsed_texts_stay_clean():
    comps = [("c0", "2"), ("c1", "3"), ("c2", "9")]
    job = annotation_job(0, RECIPE.annotation, "instruction_following", PROMPT, comps)
    shown = {cid: job.order.index(i) + 1 for i, (cid, _) in enumerate(comps)}
    missing = shown["c1"]
    reply = "\n\n".join([block(k) for k in (1, 2, 3) if k != missing] + [block(7)])
    rows = annotation_rows(job, attempts_for(job, parse_annotation_reply, reply))
    by_id = {r["completion_id"]: r for r in rows}
    assert [r["completion_id"] for r in rows] == ["c0", "c1", "c2"]
    assert by_id["c1"]["annotation"] is None and by_id["c1"]["error"] == (
        f"Text {missing}: no block; block for Text 7, but only 3 texts were given")
    for cid in ("c0", "c2"):
        assert by_id[cid]["error"] is None and by_id[cid]["rating"] == "4"
        assert json.loads(by_id[cid]["annotation"])["Rating"] == "4"
        assert by_id[cid]["text_number"] == shown[cid]
    assert by_id["c0"]["finish_reason"] == "stop"
    assert (by_id["c0"]["prompt_tokens"], by_id["c0"]["completion_tokens"]) == (100, 10)
    assert by_id["c0"]["latency_s"] == 0.0 and by_id["c0"]["judge_model"] == "gpt-4-judge"


def test_critique_row_keeps_the_reply_beside_the_score():
    item = plan_prompt(RECIPE, PROMPT)[0]
    job = critique_job(RECIPE.critique, PROMPT, item.completion_id, item.principle,
                       item.custom_system_prompt, "Seven.")
    text = "### Feedback\nSeven is prime, but say why.\nOverall Score: 1"
    got = attempts_for(job, lambda _job, t: parse_critique(t), "no score here", text)
    row = critique_row(job, got)
    assert (row["critique"], row["overall_score"], row["error"]) == (
        "Seven is prime, but say why.", 1.0, None)
    assert row["raw"] == text and row["request_key"] == "key-1" and row["calls"] == 2
    assert row["parse_failures"] == 1 and row["prompt_tokens"] == 101


def test_a_failed_call_ends_the_attempts_and_is_not_final():
    got = Attempts()
    assert not got.final and got.calls == 0
    got.results.append(result("prose", "k"))
    got.parses.append(parse_critique("prose"))
    assert got.final
    got.error = "gave up after 8 attempts: HTTP 503"
    assert not got.final and got.calls == 2


def test_completion_row_keeps_the_call_metadata():
    item = plan_prompt(RECIPE, PROMPT)[0]
    row = completion_row(item, result("Seven.", "req", finish="length", tokens=(30, 1024)))
    assert row["completion_id"] == item.completion_id and row["response"] == "Seven."
    assert (row["request_key"], row["finish_reason"], row["completion_tokens"]) == (
        "req", "length", 1024)
