"""Export records in the docs/datasets.md#schema shape, the fine-grained score, and
deterministic serialisation."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.adapters.lake import parquet_bytes
from tasks.core.ids import to_jsonl
from tasks.core.ultrafeedback.export import (
    SCORE_REVISION_KEY,
    Summary,
    build_record,
    export_schema,
    fine_grained_score,
    join_records,
    revised_score,
    summarize,
    to_arrow,
)
from tasks.core.ultrafeedback.intake import PromptRecord, Quarantined, to_prompt
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


# -- score revision and the source id ---------------------------------------------------------------

def test_zephyr_revision_stores_a_score_of_1_as_10_and_leaves_2_to_10_unchanged():
    assert revised_score(1.0, "zephyr") == 10.0
    assert [revised_score(float(s), "zephyr") for s in range(2, 11)] == [
        float(s) for s in range(2, 11)]
    assert [revised_score(float(s), "fixed") for s in range(1, 11)] == [
        float(s) for s in range(1, 11)]
    assert revised_score(None, "zephyr") is None and revised_score(None, "fixed") is None


def test_build_record_applies_the_revision_to_the_critique_score():
    prompt, items, responses, annotations, critiques = _fixture()  # first critique scores 1.0
    zephyr = build_record(prompt, items, responses, annotations, critiques,
                          FINE_GRAINED_ASPECTS, score_revision="zephyr")
    fixed = build_record(prompt, items, responses, annotations, critiques,
                         FINE_GRAINED_ASPECTS, score_revision="fixed")
    assert zephyr["completions"][0]["overall_score"] == 10.0
    assert fixed["completions"][0]["overall_score"] == 1.0
    assert zephyr["completions"][1]["overall_score"] is None  # no critique stays none


def test_export_schema_with_id_puts_id_right_after_source():
    names = export_schema(FINE_GRAINED_ASPECTS, with_id=True).names
    assert names == ["source", "id", "instruction", "models", "completions", "correct_answers",
                     "incorrect_answers"]
    assert "id" not in export_schema(FINE_GRAINED_ASPECTS).names


def test_build_record_with_id_carries_the_prompts_source_id():
    _, items, responses, annotations, critiques = _fixture()
    prompt = to_prompt("s", 1, {"instruction": "Who wrote Hamlet?", "source": "sharegpt",
                                "id": "row-17"}, source=None, max_chars=100)
    rec = build_record(prompt, items, responses, annotations, critiques, FINE_GRAINED_ASPECTS,
                       with_id=True)
    assert list(rec)[:3] == ["source", "id", "instruction"] and rec["id"] == "row-17"
    table = pa.Table.from_pylist([rec], schema=export_schema(FINE_GRAINED_ASPECTS, with_id=True))
    assert table.column("id").to_pylist() == ["row-17"]
    without = build_record(prompt, items, responses, annotations, critiques,
                           FINE_GRAINED_ASPECTS)
    assert "id" not in without


def test_only_the_zephyr_schema_carries_score_revision_metadata():
    zephyr = export_schema(FINE_GRAINED_ASPECTS, score_revision="zephyr")
    assert zephyr.metadata == {SCORE_REVISION_KEY: b"zephyr"}
    assert SCORE_REVISION_KEY == b"ultraforge.score_revision"
    assert export_schema(FINE_GRAINED_ASPECTS, score_revision="fixed").metadata is None
    assert export_schema(FINE_GRAINED_ASPECTS).metadata is None


def test_fixed_revision_parquet_bytes_equal_the_plain_schemas():
    prompt, items, responses, annotations, critiques = _fixture()
    rec = build_record(prompt, items, responses, annotations, critiques, FINE_GRAINED_ASPECTS)
    plain = parquet_bytes([rec], export_schema(FINE_GRAINED_ASPECTS))
    assert parquet_bytes([rec], export_schema(FINE_GRAINED_ASPECTS,
                                              score_revision="fixed")) == plain
    zephyr = parquet_bytes([rec], export_schema(FINE_GRAINED_ASPECTS, score_revision="zephyr"))
    assert pq.read_schema(pa.BufferReader(zephyr)).metadata[SCORE_REVISION_KEY] == b"zephyr"
    assert SCORE_REVISION_KEY not in (pq.read_schema(pa.BufferReader(plain)).metadata or {})


def test_join_records_passes_id_and_revision_through():
    prompt, items, responses, _, _ = _fixture()
    prompt = prompt.model_copy(update={"id": "src-1"})
    completions = [{"completion_id": cid, "response": text} for cid, text in responses.items()]
    critiques = [{"critique_id": "c", "completion_id": items[0].completion_id,
                  "critique": "Tight.", "overall_score": 1.0}]
    [rec] = join_records([prompt], items, completions, [], critiques, annotation_ids=[],
                         critique_ids=["c"], aspects=("honesty",), with_id=True,
                         score_revision="zephyr")
    assert rec["id"] == "src-1" and rec["completions"][0]["overall_score"] == 10.0


def test_to_prompt_maps_an_integer_id_to_a_string_and_quarantines_a_dict_id():
    got = to_prompt("s", 3, {"instruction": "Hi?", "source": "flan", "id": 42}, source=None,
                    max_chars=100)
    assert isinstance(got, PromptRecord) and got.id == "42"
    assert to_prompt("s", 3, {"instruction": "Hi?", "source": "flan"}, source=None,
                     max_chars=100).id is None
    bad = to_prompt("s", 4, {"instruction": "Hi?", "source": "flan", "id": {"k": 1}},
                    source=None, max_chars=100)
    assert isinstance(bad, Quarantined)
    assert (bad.field, bad.row, bad.origin) == ("id", 4, "s")
    assert bad.reason == "expected a string or integer, got dict"


def test_a_boolean_source_id_is_quarantined_not_stored_as_true():
    out = to_prompt("s", 3, {"instruction": "Hi?", "source": "sharegpt", "id": True}, source=None,
                    max_chars=100)
    assert out.field == "id" and "bool" in out.reason
