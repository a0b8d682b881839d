"""Which fields of each set are translated: texts found at their paths, every other field copied
unchanged, the originals kept beside them as `<column>_en`."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tasks.core.derived.binarize import DPO_SCHEMA
from tasks.core.derived.sft import SFT_SCHEMA
from tasks.core.translate.fields import slots, translated, translated_schema
from tasks.core.ultrafeedback.export import export_schema

UF = {
    "source": "sharegpt", "id": "D2TC9GP_0", "instruction": "How do plants make food?",
    "models": ["gpt-4", "alpaca-7b"],
    "completions": [
        {"model": "gpt-4", "principle": "helpfulness", "custom_system_prompt": "Be helpful.",
         "response": "By photosynthesis.\n\nConfidence: 90%",
         "annotations": {"helpfulness": {"Type": ["1", "2"], "Rationale": "Clear.", "Rating": "4",
                                         "Rationale For Rating": "Accurate and short."},
                         "honesty": {"Rating": "N/A", "Rationale": "No claims of certainty."}},
         "critique": "Could add detail.", "overall_score": 7.0, "fine-grained_score": 4.0},
        {"model": "alpaca-7b", "principle": "honesty", "custom_system_prompt": "",
         "response": "They eat soil.", "annotations": {"helpfulness": None, "honesty": None},
         "critique": None, "overall_score": None, "fine-grained_score": None},
    ],
    "correct_answers": ["None"], "incorrect_answers": ["None"],
}


def upper_all(row, kind, feedback=False):
    found = slots(row, kind, feedback)
    return found, translated(row, kind, {s.path: s.text.upper() for s in found}, "en")


def without(row: dict, *columns: str) -> dict:
    return {k: v for k, v in row.items() if k not in columns}


def test_ultrafeedback_translates_instruction_responses_and_system_prompts_and_keeps_the_rest():
    found, out = upper_all(UF, "ultrafeedback")
    assert [s.path for s in found] == [
        ("instruction",), ("completions", 0, "response"), ("completions", 1, "response"),
        ("completions", 0, "custom_system_prompt")]  # the empty system prompt is no text
    assert out["instruction"] == "HOW DO PLANTS MAKE FOOD?" and out["instruction_en"] == UF["instruction"]
    assert out["completions_en"] == UF["completions"]
    for mine, theirs in zip(out["completions"], UF["completions"], strict=True):
        assert without(mine, "response", "custom_system_prompt") == without(
            theirs, "response", "custom_system_prompt")  # ratings, types, scores, model …
    assert without(out, "instruction", "instruction_en", "completions", "completions_en") == without(
        UF, "instruction", "completions")
    assert list(out)[:4] == ["source", "id", "instruction", "instruction_en"]


def test_with_feedback_the_rationales_and_critiques_are_translated_but_not_ratings_or_types():
    found, out = upper_all(UF, "ultrafeedback", feedback=True)
    paths = {s.path for s in found}
    assert ("completions", 0, "critique") in paths
    assert ("completions", 0, "annotations", "helpfulness", "Rationale For Rating") in paths
    helpful = out["completions"][0]["annotations"]["helpfulness"]
    assert helpful == {"Type": ["1", "2"], "Rationale": "CLEAR.", "Rating": "4",
                       "Rationale For Rating": "ACCURATE AND SHORT."}
    assert out["completions"][0]["annotations"]["honesty"]["Rating"] == "N/A"


def test_sft_dpo_and_ultrachat_translate_prompts_and_contents_keeping_roles_ids_and_scores():
    sft = {"prompt": "Hi?", "prompt_id": "abc", "messages": [
        {"content": "Hi?", "role": "user"}, {"content": "Hello.", "role": "assistant"}]}
    _, out = upper_all(sft, "sft")
    assert out["prompt_id"] == "abc" and [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert [m["content"] for m in out["messages"]] == ["HI?", "HELLO."]
    assert out["messages_en"] == sft["messages"]

    dpo = {**sft, "chosen": sft["messages"], "rejected": [{"content": "Hi?", "role": "user"},
                                                          {"content": "No.", "role": "assistant"}],
           "score_chosen": 8.0, "score_rejected": 3.0}
    found, out = upper_all(dpo, "dpo")
    assert len(found) == 7 and (out["score_chosen"], out["score_rejected"]) == (8.0, 3.0)
    assert out["rejected"][1]["content"] == "NO." and out["rejected_en"] == dpo["rejected"]

    uc = {"id": "0", "data": ["Tell me a story.", "Once upon a time."]}
    _, out = upper_all(uc, "ultrachat")
    assert out == {"id": "0", "data": ["TELL ME A STORY.", "ONCE UPON A TIME."], "data_en": uc["data"]}


def test_the_translated_schema_has_each_text_column_followed_by_its_original():
    uf = translated_schema(export_schema(["helpfulness", "honesty"], with_id=True), "ultrafeedback", "en")
    assert uf.names == ["source", "id", "instruction", "instruction_en", "models", "completions",
                        "completions_en", "correct_answers", "incorrect_answers"]
    assert translated_schema(SFT_SCHEMA, "sft", "en").names == [
        "prompt", "prompt_en", "prompt_id", "messages", "messages_en"]
    dpo = translated_schema(DPO_SCHEMA, "dpo", "en")
    assert dpo.field("chosen_en").type == DPO_SCHEMA.field("chosen").type
    # translated records fit it
    _, out = upper_all({"prompt": "Hi?", "prompt_id": "a", "messages": [{"content": "Hi?", "role": "user"}]},
                       "sft")
    assert pa.Table.from_pylist([out], schema=translated_schema(SFT_SCHEMA, "sft", "en")).num_rows == 1


def test_inline_originals_go_beside_each_text_in_its_struct_and_the_rows_fit_the_schema():
    found = slots(UF, "ultrafeedback", feedback=True)
    out = translated(UF, "ultrafeedback", {s.path: s.text.upper() for s in found}, "en",
                     originals="inline", feedback=True)
    assert list(out)[:4] == ["source", "id", "instruction", "instruction_en"]
    first, second = out["completions"]
    assert list(first)[:6] == ["model", "principle", "custom_system_prompt",
                               "custom_system_prompt_en", "response", "response_en"]
    assert first["response_en"] == UF["completions"][0]["response"]
    assert first["response"] == UF["completions"][0]["response"].upper()
    assert first["annotations"]["helpfulness"]["Rationale For Rating_en"] == "Accurate and short."
    assert first["critique_en"] == "Could add detail."
    # an empty or null text keeps its original as it was, and a null aspect stays null
    assert second["custom_system_prompt_en"] == "" and second["critique_en"] is None
    assert second["annotations"]["honesty"] is None
    schema = translated_schema(export_schema(["helpfulness", "honesty"], with_id=True),
                               "ultrafeedback", "en", "inline", feedback=True)
    table = pa.Table.from_pylist([out], schema=schema)
    assert table.to_pylist()[0] == out
    completion = schema.field("completions").type.value_type
    assert [f.name for f in completion][:6] == list(first)[:6]


def test_no_originals_leaves_the_schema_as_it_was_and_a_list_of_strings_keeps_a_column_when_inline():
    assert translated_schema(SFT_SCHEMA, "sft", "en", "none") == SFT_SCHEMA
    row = {"id": "0", "data": ["Hi", "Hello"]}
    out = translated(row, "ultrachat", {("data", 0): "やあ", ("data", 1): "こんにちは"}, "en", "inline")
    assert out == {"id": "0", "data": ["やあ", "こんにちは"], "data_en": ["Hi", "Hello"]}


def test_a_column_the_original_would_take_is_refused_naming_it():
    with pytest.raises(ValueError, match="'prompt_en'"):
        translated_schema(SFT_SCHEMA.append(pa.field("prompt_en", pa.string())), "sft", "en")
