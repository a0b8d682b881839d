"""Translation shards: rows cut into blocks split by split, and a work fingerprint that changes
with what decides the calls and rows, and only with that."""

from __future__ import annotations

import pytest

from tasks.core.translate.blocks import Block, block_key, block_path, plan_blocks, work_fingerprint
from tasks.core.translate.overview import overview_record
from tasks.core.translate.recipe import TranslateRecipe


def test_blocks_cover_each_splits_first_rows_once_in_order():
    blocks = plan_blocks({"train": [5], "test": [2], "empty": [0]}, size=2, limit=None)
    assert [(b.split, b.start, b.stop) for b in blocks] == [
        ("train", 0, 2), ("train", 2, 4), ("train", 4, 5), ("test", 0, 2)]
    assert [(b.start, b.stop) for b in plan_blocks({"train": [5]}, size=2, limit=3)] == [(0, 2), (2, 3)]


def test_a_split_of_several_files_is_cut_file_by_file_and_rows_are_numbered_across_them():
    blocks = plan_blocks({"train": [3, 2, 4]}, size=2, limit=None)
    assert [(b.part, b.start, b.stop) for b in blocks] == [
        (0, 0, 2), (0, 2, 3), (1, 0, 2), (2, 0, 2), (2, 2, 4)]
    assert [b.row(0) for b in blocks] == [0, 2, 3, 5, 7]
    assert [(b.part, b.start, b.stop) for b in plan_blocks({"train": [3, 2, 4]}, 2, limit=4)] == [
        (0, 0, 2), (0, 2, 3), (1, 0, 1)]


def test_the_fingerprint_follows_the_work_not_how_it_is_sent_or_published():
    base = TranslateRecipe(set="sft")
    same = [base.model_copy(update={"flagged": "exclude", "limit": 5, "name": "x", "max_parallel_shards": 1}),
            TranslateRecipe(set="sft", translation={"route": "batch"})]
    other = [TranslateRecipe(set="dpo"), TranslateRecipe(set="sft", originals="inline"),
             TranslateRecipe(set="sft", translation={"max_chunk_tokens": 100}),
             TranslateRecipe(set="sft", input="elsewhere")]
    fp = work_fingerprint(base, "gpt-4o")
    assert all(work_fingerprint(r, "gpt-4o") == fp for r in same)
    assert all(work_fingerprint(r, "gpt-4o") != fp for r in other)
    assert work_fingerprint(base, "gpt-4o-mini") != fp
    block = Block(split="train_sft", start=200, stop=400)
    assert block_key(fp, block).endswith("train_sft-00000-000000200-000000400")
    assert block_path(fp, block).startswith(f"work/translate/{fp[:24]}/train_sft/")


def test_the_overview_layout_is_only_for_the_raw_sets():
    with pytest.raises(ValueError, match="raw sets only"):
        TranslateRecipe(set="dpo", overview=True)
    assert overview_record({"id": "7", "data": ["a", "b"], "data_en": ["A", "B"]}, "ultrachat") == {
        "id": "7", "data": ["a", "b"]}


def test_an_unparsed_aspect_is_an_empty_list_in_the_overview():
    row = {"source": "flan", "id": None, "instruction": "i", "models": ["m"], "critique": "c",
           "completions": [{"model": "m", "principle": "honesty", "custom_system_prompt": "s",
                            "response": "r", "critique": "c", "overall_score": 3.0,
                            "annotations": {"honesty": None,
                                            "helpfulness": {"Type": ["1"], "Rationale": "x",
                                                            "Rating": "3", "Rationale For Rating": "y",
                                                            "Rationale_en": "X"}}}]}
    out = overview_record(row, "ultrafeedback")
    assert out["completions"][0]["annotations"] == {
        "honesty": [], "helpfulness": [{"Type": ["1"], "Rationale": "x", "Rating": "3",
                                        "Rationale For Rating": "y"}]}
    assert "critique" not in out and "critique" not in out["completions"][0]
