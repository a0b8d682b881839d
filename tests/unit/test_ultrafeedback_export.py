"""Export records in the docs/datasets.md#schema shape, the fine-grained score, and
deterministic serialisation."""

import json

import pyarrow as pa

from tasks.core.ids import to_jsonl
from tasks.core.ultrafeedback.export import (
    Summary,
    build_record,
    export_schema,
    fine_grained_score,
    join_records,
    summarize,
    to_arrow,
)
from tasks.core.ultrafeedback.intake import to_prompt
from tasks.core.ultrafeedback.plan import plan_prompt
from tasks.core.ultrafeedback.recipe import FINE_GRAINED_ASPECTS, UltraFeedbackRecipe


def test_fine_grained_score_is_the_mean_skipping_na_and_unparsed():
    assert fine_grained_score({"a": {"Rating": "4"}, "b": {"Rating": "5"}, "c": {"Rating": "N/A"},
                               "d": None}) == 4.5
    assert fine_grained_score({"a": {"Rating": "1"}, "b": {"Rating": "2"}, "c": {"Rating": "2"},
                               "d": {"Rating": "2"}}) == 1.75
    assert fine_grained_score({"a": {"Rating": "N/A"}, "b": None}) is None
    assert fine_grained_score({}) is None


def _fixture():
    recipe = UltraFeedbackRecipe(sources=[{"name": "s", "path": "x"}])
    prompt = to_prompt("s", 1, {"instruction": "Who wrote Hamlet?", "source": "sharegpt"},
                       source=None, max_chars=100)
    items = plan_prompt(recipe, prompt)
    responses = {it.completion_id: f"answer from {it.model}" for it in items[:3]}  # 4th failed
    by_aspect = {
        "instruction_following": {"Rating": "4", "Rationale": "ok"},
        "honesty": {"Rating": "N/A", "Rationale": "a poem: honesty does not apply"},  # only here
        "truthfulness": {"Type": ["None"], "Rationale": "none", "Rating": "3",
                         "Rationale For Rating": "x"},
        "helpfulness": {"Type": ["1", "3"], "Rationale": "clear", "Rating": "2",
                        "Rationale For Rating": "y"},
    }
    annotations = {(it.completion_id, a): by_aspect[a] for it in items for a in by_aspect}
    annotations[(items[0].completion_id, "honesty")] = None
    critiques = {items[0].completion_id: ("Solid.", 1.0), items[1].completion_id: (None, None)}
    return prompt, items, responses, annotations, critiques


def test_record_has_the_exact_shape_and_order():
    prompt, items, responses, annotations, critiques = _fixture()
    rec = build_record(prompt, items, responses, annotations, critiques, FINE_GRAINED_ASPECTS)
    assert list(rec) == ["source", "instruction", "models", "completions", "correct_answers",
                         "incorrect_answers"]
    assert rec["models"] == [it.model for it in items[:3]]
    assert rec["correct_answers"] == ["None"] and rec["incorrect_answers"] == ["None"]
    first = rec["completions"][0]
    assert list(first) == ["model", "principle", "custom_system_prompt", "response", "annotations",
                           "critique", "overall_score", "fine-grained_score"]
    assert list(first["annotations"]) == list(FINE_GRAINED_ASPECTS)
    assert first["annotations"]["honesty"] is None
    assert first["critique"] == "Solid." and first["overall_score"] == 1.0
    assert first["fine-grained_score"] == 3.0  # mean of 4, 3, 2; honesty null
    assert rec["completions"][1]["fine-grained_score"] == 3.0  # honesty N/A is skipped
    assert rec["completions"][1]["overall_score"] is None
    assert first["custom_system_prompt"] == items[0].custom_system_prompt


def test_prompt_without_any_completion_is_not_exported():
    prompt, items, _, annotations, critiques = _fixture()
    assert build_record(prompt, items, {}, annotations, critiques, FINE_GRAINED_ASPECTS) is None


def test_arrow_and_jsonl_round_trip_deterministically():
    prompt, items, responses, annotations, critiques = _fixture()
    rec = build_record(prompt, items, responses, annotations, critiques, FINE_GRAINED_ASPECTS)
    table = to_arrow([rec], FINE_GRAINED_ASPECTS)
    assert table.schema == export_schema(FINE_GRAINED_ASPECTS)
    assert table.to_pylist() == [rec]
    assert to_jsonl([rec]) == to_jsonl([json.loads(to_jsonl([rec]))])
    ann_type = table.schema.field("completions").type.value_type.field("annotations").type
    assert ann_type.field("truthfulness").type.field("Type").type == pa.list_(pa.string())
    assert ann_type.field("honesty").type.names == ["Rating", "Rationale"]


def test_overall_rating_mode_exports_its_own_aspect():
    schema = export_schema(("overall-rating",))
    ann = schema.field("completions").type.value_type.field("annotations").type
    assert ann.names == ["overall-rating"]


def test_histograms_count_ratings_and_scores_and_add_up_over_batches():
    prompt, items, responses, annotations, critiques = _fixture()
    rec = build_record(prompt, items, responses, annotations, critiques, FINE_GRAINED_ASPECTS)
    summary = Summary(FINE_GRAINED_ASPECTS).add([rec]).result()
    rows = {r["aspect"]: r for r in summary["rating_histogram"]}
    assert rows["honesty"]["N/A"] == 2 and rows["honesty"]["unparsed"] == 1
    assert rows["truthfulness"]["3"] == 3 and rows["truthfulness"]["N/A"] == 0
    assert rows["helpfulness"]["2"] == 3
    assert summary["score_histogram"] == [{"overall_score": "1", "completions": 1},
                                          {"overall_score": "none", "completions": 2}]
    twice = Summary(FINE_GRAINED_ASPECTS).add([rec]).add([rec]).result()
    assert twice["counts"] == {k: 2 * v for k, v in summary["counts"].items()}
    assert {r["aspect"]: r["unparsed"] for r in twice["rating_histogram"]} == {
        r["aspect"]: 2 * r["unparsed"] for r in summary["rating_histogram"]}


def test_join_uses_only_this_recipes_judgements_and_skips_failed_completions():
    prompt, items, responses, _, _ = _fixture()
    completions = [{"completion_id": cid, "response": text} for cid, text in responses.items()]
    rating = {"Rating": "5", "Rationale": "fine"}
    annotations = [
        {"annotation_id": "now", "completion_id": items[0].completion_id,
         "aspect": "instruction_following", "annotation": json.dumps(rating)},
        {"annotation_id": "now", "completion_id": items[1].completion_id,
         "aspect": "instruction_following", "annotation": None},  # unparsed after re-asks
        # an earlier recipe's rating of the same completion (other id): must not be used
        {"annotation_id": "before", "completion_id": items[2].completion_id,
         "aspect": "instruction_following", "annotation": json.dumps({**rating, "Rating": "1"})},
    ]
    critiques = [{"critique_id": "c", "completion_id": items[0].completion_id,
                  "critique": "Tight.", "overall_score": 1.0},
                 {"critique_id": "old", "completion_id": items[1].completion_id,
                  "critique": "Stale.", "overall_score": 9.0}]
    other = to_prompt("s", 2, {"instruction": "Unplanned?", "source": "flan"}, source=None,
                      max_chars=100)
    [rec] = join_records([other, prompt], items, completions, annotations, critiques,
                         annotation_ids=["now"], critique_ids=["c"],
                         aspects=("instruction_following",))
    got = [(c["model"], c["annotations"]["instruction_following"], c["overall_score"])
           for c in rec["completions"]]
    assert got == [(items[0].model, rating, 1.0), (items[1].model, None, None),
                   (items[2].model, None, None)]
    summary = summarize([rec], ("instruction_following",))
    assert summary["counts"] == {"exported_prompts": 1, "exported_completions": 3,
                                 "aspect_ratings": 3, "aspect_ratings_parsed": 1,
                                 "critiques_parsed": 1}
