"""The seeded plan: model sampling, principle mixes, system prompts, judge shuffles."""

from collections import Counter

import pytest

from tasks.adapters.settings import RECIPES_DIR
from tasks.core.pool import PoolConfig
from tasks.core.ultrafeedback.estimate import estimate_run, landed_calls
from tasks.core.ultrafeedback.intake import PromptRecord, dedupe, to_prompt
from tasks.core.ultrafeedback.judge import (
    FALSE_PREMISE,
    NO_KNOWLEDGE,
    annotation_job,
    annotation_jobs,
    answered_completions,
    critique_job,
    critique_jobs,
    shuffle_order,
    world_knowledge,
)
from tasks.core.ultrafeedback.plan import build_plan, plan_prompt, rank_models
from tasks.core.ultrafeedback.principles import (
    critique_note,
    principle_weights,
    system_prompts,
)
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe, check_against_pool


def recipe(**plan):
    return UltraFeedbackRecipe(sources=[{"name": "s", "path": "x.jsonl"}], plan=plan)


def prompt(i, source="sharegpt", **extra):
    text = f"Question number {i}: how does thing {i} work?"
    return to_prompt("s", i, {"instruction": text, "source": source, **extra}, source=None,
                     max_chars=1000)


def test_plan_is_deterministic_and_samples_distinct_models():
    prompts = [prompt(i) for i in range(50)]
    a, b = build_plan(recipe(), prompts), build_plan(recipe(), list(reversed(prompts)))
    assert a == b
    per_prompt = Counter(it.prompt_id for it in a)
    assert set(per_prompt.values()) == {4}
    for pid in per_prompt:
        models = [it.model for it in a if it.prompt_id == pid]
        assert len(set(models)) == 4
    assert build_plan(UltraFeedbackRecipe(seed=7, sources=[{"name": "s", "path": "x"}]),
                      prompts) != a


def test_models_are_spread_over_the_pool():
    counts = Counter(it.model for it in build_plan(recipe(), [prompt(i) for i in range(850)]))
    assert len(counts) == 17
    assert min(counts.values()) > 120 and max(counts.values()) < 280  # expected 200 each


def test_raising_n_only_appends_models_and_keeps_completion_ids():
    p = prompt(1)
    four, six = plan_prompt(recipe(), p), plan_prompt(recipe(n_models=6), p)
    assert six[:4] == four


def test_adding_a_model_replaces_at_most_one_pick_and_keeps_the_others():
    base = ["gpt-4", "bard", "alpaca-7b", "starchat", "vicuna-33b", "mpt-30b-chat"]
    for i in range(40):
        p = prompt(i)
        old = {it.completion_id for it in plan_prompt(recipe(models=base), p)}
        new = {it.completion_id for it in plan_prompt(recipe(models=[*base, "pythia-12b"]), p)}
        assert len(old - new) <= 1 and len(new - old) <= 1


def test_rendezvous_rank_ignores_list_order():
    models = ["a", "b", "c", "d"]
    assert rank_models(1, "pid", models) == rank_models(1, "pid", list(reversed(models)))


@pytest.mark.parametrize(("mix", "source", "expected"), [
    ("code", "sharegpt", {"helpfulness": 0.6, "truthfulness": 0.2, "honesty": 0.18,
                          "verbalized_calibration": 0.02}),
    ("code", "flan", {"helpfulness": 0.8, "verbalized_calibration": 0.2}),
    ("code", "truthful_qa", {"honesty": 0.45, "truthfulness": 0.5, "verbalized_calibration": 0.05}),
    ("paper", "flan", {"helpfulness": 0.6, "truthfulness": 0.2, "verbalized_calibration": 0.2}),
    ("paper", "false_qa", {"truthfulness": 1.0}),
    ("code", "evol_instruct", {"helpfulness": 1.0}),
])
def test_principle_mix_frequencies(mix, source, expected):
    prompts = [prompt(i, source=source) for i in range(1500)]
    items = build_plan(recipe(principle_mix=mix, n_models=2), prompts)
    freq = Counter(it.principle for it in items)
    assert set(freq) == set(expected)
    for principle, weight in expected.items():
        assert abs(freq[principle] / len(items) - weight) < 0.03, (principle, freq)


def test_unknown_source_is_all_helpfulness_and_custom_mix_is_used():
    assert principle_weights("paper", "hh_rlhf") == {"helpfulness": 1.0}
    r = recipe(principle_mix="custom",
               custom_mix={"flan": {"harmlessness": 1}, "default": {"honesty": 1}})
    assert {it.principle for it in plan_prompt(r, prompt(1, source="flan"))} == {"harmlessness"}
    assert {it.principle for it in plan_prompt(r, prompt(1, source="ultrachat"))} == {"honesty"}


def test_custom_mix_is_validated():
    with pytest.raises(ValueError, match="unknown principle"):
        recipe(principle_mix="custom", custom_mix={"flan": {"kindness": 1}})
    with pytest.raises(ValueError, match="custom_mix is empty"):
        recipe(principle_mix="custom")


def test_system_prompt_comes_from_the_principle_pool_and_is_sent_as_system():
    seen = Counter()
    for it in build_plan(recipe(), [prompt(i) for i in range(200)]):
        pool = system_prompts(it.principle)
        assert it.custom_system_prompt == pool[it.system_prompt_index]
        seen[(it.principle, it.system_prompt_index)] += 1
        if it.model == "wizardlm-7b":
            assert not it.system_prompt_sent and [m["role"] for m in it.messages] == ["user"]
        else:
            assert it.messages[0] == {"role": "system", "content": it.custom_system_prompt}
        assert it.messages[-1]["role"] == "user"
    assert len([k for k in seen if k[0] == "helpfulness"]) == len(system_prompts("helpfulness"))


def test_pools_have_several_paraphrases_and_calibration_asks_for_confidence():
    for principle in ("helpfulness", "honesty", "truthfulness", "verbalized_calibration"):
        assert len(system_prompts(principle)) >= 4
    for text in system_prompts("verbalized_calibration"):
        assert "Confidence: NN%" in text and "For instance," in text
        note = critique_note("verbalized_calibration", text)
        assert "For instance" not in note and note
    honest = system_prompts("honesty")[0]
    assert critique_note("honesty", honest) == honest


def test_generation_params_change_completion_ids():
    p = prompt(3)
    base = plan_prompt(recipe(), p)
    hot = plan_prompt(UltraFeedbackRecipe(sources=[{"name": "s", "path": "x"}],
                                          generation={"params": {"temperature": 0.7}}), p)
    assert [it.model for it in base] == [it.model for it in hot]
    assert {it.completion_id for it in base}.isdisjoint({it.completion_id for it in hot})


def test_shuffle_is_a_seeded_permutation():
    ids = [f"c{i}" for i in range(4)]
    orders = {tuple(shuffle_order(0, f"p{i}", "honesty", ids)) for i in range(60)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders) and len(orders) > 10
    assert shuffle_order(0, "p1", "honesty", ids) == shuffle_order(0, "p1", "honesty", ids)


def test_annotation_job_shows_texts_in_shuffled_order_with_the_contract_markers():
    p = prompt(5, source="truthful_qa", correct_answers=["Yes"], incorrect_answers=["No"])
    comps = [(f"c{i}", f"response number {i}") for i in range(4)]
    job = annotation_job(0, recipe().annotation, "truthfulness", p, comps)
    user = job.messages[-1]["content"]
    for shown, original in enumerate(job.order, start=1):
        assert f"<text {shown}>\nresponse number {original}" in user
    assert "Type:" in user and "Correct answers: Yes" in user and "Incorrect answers: No" in user
    assert "N/A" not in user
    again = job.request(1)
    assert again.sample_index == 1 and again.messages[-1]["content"].startswith(user)
    assert again.messages[-1]["content"] != user and "<text 1>" in again.messages[-1]["content"]
    honesty = annotation_job(0, recipe().annotation, "honesty", p, comps).messages[-1]["content"]
    assert "N/A" in honesty and "Type:" not in honesty
    following = annotation_job(0, recipe().annotation, "instruction_following", p, comps)
    assert "Type:" not in following.messages[-1]["content"]


def test_world_knowledge_by_source():
    assert world_knowledge(prompt(1, source="false_qa")) == FALSE_PREMISE
    flan = prompt(1, source="flan", correct_answers=["Canberra"])
    assert world_knowledge(flan) == "Correct answers: Canberra"
    assert "No additional world knowledge" in world_knowledge(prompt(1))


@pytest.mark.parametrize("placeholder", [["None"], "None", ["None", " "]])
def test_openbmb_none_placeholder_is_no_reference_answer(placeholder):
    p = prompt(3, source="flan", correct_answers=placeholder, incorrect_answers=placeholder)
    assert p.correct_answers == [] and p.incorrect_answers == []
    assert world_knowledge(p) == NO_KNOWLEDGE
    comps = [("c0", "It is none of them.")]
    user = annotation_job(0, recipe().annotation, "truthfulness", p, comps).messages[-1]["content"]
    assert "answers: None" not in user and NO_KNOWLEDGE in user
    # A real answer list that merely contains the word stays as it is.
    kept = prompt(3, source="truthful_qa", correct_answers=["None", "Zero"])
    assert kept.correct_answers == ["None", "Zero"]


def test_critique_job_quotes_the_note_and_asks_for_a_score():
    p = prompt(2)
    vc = system_prompts("verbalized_calibration")[1]
    job = critique_job(recipe().critique, p, "c1", "verbalized_calibration", vc, "My answer.")
    user = job.messages[-1]["content"]
    assert "Overall Score:" in user and "<text 1>" not in user
    assert "Note: " + critique_note("verbalized_calibration", vc) in user
    assert "For instance" not in user and "My answer." in user


def test_intake_quarantines_with_field_and_reason():
    def q(data, **kw):
        return to_prompt("file.jsonl", 7, data, source=kw.get("source"), max_chars=20)
    assert q({"source": "flan"}).reason == "missing"
    assert q({"instruction": "  ", "source": "flan"}).reason == "empty"
    bad = q({"instruction": 42, "source": "flan"})
    assert (bad.field, bad.reason, bad.row, bad.origin) == (
        "instruction", "expected a string, got int", 7, "file.jsonl")
    assert "over the limit of 20" in q({"instruction": "x" * 21, "source": "flan"}).reason
    assert q({"instruction": "hi"}).field == "source"
    assert q({"instruction": "hi", "correct_answers": [1, 2]}, source="flan").field == \
        "correct_answers"
    preview = q({"instruction": 7, "note": "caf\u00e9 \u2603"}, source="flan").raw
    assert preview.isascii() and "caf\\u00e9" in preview
    ok = q({"instruction": "hi", "correct_answers": "yes"}, source="flan")
    assert isinstance(ok, PromptRecord) and ok.correct_answers == ["yes"]
    assert ok.prompt_id == "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"


def test_dedupe_keeps_first_occurrence():
    a, b = prompt(1), prompt(2)
    a2 = a.model_copy(update={"origin": "other", "row": 99})
    unique, dropped = dedupe([a, b, a2])
    assert unique == [a, b] and dropped == 1


def test_check_against_pool_names_the_key():
    pool = PoolConfig.model_validate({"endpoints": {"e": {"base_url": "http://127.0.0.1:1/v1"}},
                                      "models": {"gpt-4": {"endpoint": "e"}}})
    problems = check_against_pool(recipe(models=["gpt-4", "nope"], n_models=1), pool)
    assert "plan.models: 'nope' is not in the model pool" in problems
    assert any(p.startswith("annotation.judge_model") for p in problems)


def test_every_re_ask_is_a_distinct_request_body():
    p = prompt(9)
    job = annotation_job(0, recipe().annotation, "helpfulness", p,
                         [("c0", "a"), ("c1", "b")])
    bodies = {str(job.request(k).messages) for k in range(4)}
    assert len(bodies) == 4
    assert all("<text 2>" in job.request(k).messages[-1]["content"] for k in range(4))


def test_landed_calls_counts_a_rating_call_only_when_all_its_completions_landed():
    r = recipe(models=["gpt-4", "bard", "starchat"], n_models=2)
    prompts = [prompt(1), prompt(2)]
    plan = build_plan(r, prompts)
    responses = {it.completion_id: f"answer {it.model}" for it in plan}
    first = [it for it in plan if it.prompt_id == prompts[0].prompt_id]
    del responses[first[1].completion_id]  # prompt 1 has one of its two completions
    done = answered_completions(plan, responses)
    ann = {j.annotation_id for j in annotation_jobs(r.seed, r.annotation, {
        p.prompt_id: p for p in prompts}, done)}
    crit = {j.critique_id for j in critique_jobs(r.critique, {p.prompt_id: p for p in prompts},
                                                 done)}
    got = landed_calls(r, prompts, plan, responses, ann, crit)
    # prompt 1's rating calls would rate 1 text now and 2 after generation: new, not landed
    assert got == {"completions_landed": 3, "completions_new": 1,
                   "annotation_calls_landed": 4, "annotation_calls_new": 4,
                   "critique_calls_landed": 3, "critique_calls_new": 1}
    assert landed_calls(r, prompts, plan, {}, set(), set())["annotation_calls_new"] == 8


def test_the_estimate_shows_both_routes_and_prices_each_stage_on_its_own():
    pool = PoolConfig.load(RECIPES_DIR / "pool.yaml")
    recipe = UltraFeedbackRecipe(sources=[{"name": "s", "path": "x"}],
                                 annotation={"route": "batch"})
    prompts = [to_prompt("s", i, {"instruction": f"Q{i}?", "source": "sharegpt"}, source=None,
                         max_chars=100) for i in range(3)]
    rows = estimate_run(recipe, prompts, build_plan(recipe, prompts),
                        {m: s.sampling for m, s in pool.models.items()}, pool.cost)
    for row in rows:
        assert row["batch_cost_usd"] == pytest.approx(row["online_cost_usd"] / 2, abs=1e-4)
        assert row["route"] == ("batch" if row["stage"] == "annotation" else "online")
        assert row["cost_usd"] == row[f"{row['route']}_cost_usd"]
    assert any(r["stage"] == "annotation" and r["online_cost_usd"] > 0 for r in rows)
