"""What the report reads from a lake on either store (a local directory, S3 on moto): the rows
of hand-made shards and files summed by the report's SQL, each shard placed at its file's time,
and with no warehouse file yet, every section empty rather than an error."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.resources import Resources, activate
from tasks.core.derived.binarize import DPO_SCHEMA
from tasks.core.report.rows import FlagCount, MarginCount, ModelPicks, RatingCount
from tasks.core.ultrafeedback.tables import ANNOTATIONS, COMPLETIONS, TABLES, USAGE
from tasks.core.usage import UsageRow
from tasks.report.dashboard import read_report


def turn(question: str, answer: str) -> list[dict[str, str]]:
    return [{"content": question, "role": "user"}, {"content": answer, "role": "assistant"}]


def land(lake: Lake) -> None:
    """A block of two completions (gpt-4 retried twice), its usage and ratings, a DPO set
    whose one pair prefers gpt-4's answer, and a translation with two flagged records."""
    lake.write_shard(USAGE, "blk-a", [{"shard": "blk-a", **u.model_dump()} for u in (
        UsageRow(stage="generation", model="gpt-4", requests=1, prompt_tokens=10,
                 completion_tokens=20, cost_usd=0.5),
        UsageRow(stage="generation", model="llama-2-7b-chat", requests=1, failed=1,
                 prompt_tokens=10, completion_tokens=5))])
    lake.write_shard(COMPLETIONS, "blk-a", [
        {"completion_id": "c1", "prompt_id": "p1", "model": "gpt-4", "response": "Blue.", "attempts": 3},
        {"completion_id": "c2", "prompt_id": "p1", "model": "llama-2-7b-chat", "response": "Red.",
         "attempts": 1}])
    lake.write_shard(ANNOTATIONS, "blk-a", [
        {"annotation_id": f"a{i}", "completion_id": c, "aspect": "honesty", "rating": r}
        for i, (c, r) in enumerate((("c1", "5"), ("c2", "2"), ("c1", None)))])
    lake.write_bytes("exports/dpo/x/data/train_prefs.parquet", parquet_bytes(pa.Table.from_pylist(
        [{"prompt": "Sky?", "prompt_id": "p1", "chosen": turn("Sky?", "Blue."),
          "rejected": turn("Sky?", "Red."), "messages": turn("Sky?", "Blue."),
          "score_chosen": 8.0, "score_rejected": 3.0}], schema=DPO_SCHEMA)))
    flags = [{"split": "train_prefs", "row": 0, "record": "p1", "excluded": False,
              "reasons": {"untranslated": "no Japanese", "length_ratio": "0.2"}},
             {"split": "train_prefs", "row": 1, "record": "p2", "excluded": True,
              "reasons": {"untranslated": "no Japanese"}}]
    lake.write_bytes("exports/dpo-ja/x/flags.jsonl",
                     "".join(json.dumps(f) + "\n" for f in flags).encode())
    lake.write_bytes("exports/sft-ja/y/flags.jsonl", b"")  # a translation without flags


@pytest.fixture
def resources(any_settings):
    res = activate(Resources.build(any_settings))
    yield res
    activate(None)


def test_the_report_sums_what_landed_on_either_store(resources):
    land(resources.lake)
    with resources.warehouse() as wh:
        wh.refresh_views(TABLES)
    data = read_report.fn()

    assert data.warehouse == str(resources.settings.warehouse)
    assert {(p.model, p.requests, p.failed, p.retries) for p in data.landed} == {
        ("gpt-4", 1, 0, 0), ("llama-2-7b-chat", 1, 1, 0),  # uf_usage
        ("gpt-4", 0, 0, 2), ("llama-2-7b-chat", 0, 0, 0)}  # uf_completions: attempts − 1
    assert len({p.landed_at for p in data.landed}) <= 2 and all(p.landed_at.tzinfo for p in data.landed)
    assert data.endpoint_of["gpt-4"] == "local"  # the bundled pool
    assert data.usage == [
        UsageRow(stage="ultrafeedback/generation", model="gpt-4", requests=1, prompt_tokens=10,
                 completion_tokens=20, cost_usd=0.5),
        UsageRow(stage="ultrafeedback/generation", model="llama-2-7b-chat", requests=1, failed=1,
                 prompt_tokens=10, completion_tokens=5)]
    assert data.ratings == [RatingCount(aspect="honesty", rating="2", count=1),
                            RatingCount(aspect="honesty", rating="5", count=1),
                            RatingCount(aspect="honesty", rating="unparsed", count=1)]
    assert data.margins == [MarginCount(set="dpo/x", split="train_prefs", margin=5.0, pairs=1)]
    assert data.picks == [ModelPicks(set="dpo/x", model="gpt-4", chosen=1, rejected=0),
                          ModelPicks(set="dpo/x", model="llama-2-7b-chat", chosen=0, rejected=1)]
    assert data.translated_sets == 2
    assert data.flags == [FlagCount(set="dpo-ja/x", reason="length_ratio", records=1, excluded=0),
                          FlagCount(set="dpo-ja/x", reason="untranslated", records=2, excluded=1)]
    assert {t.table: t.rows for t in data.tables}["uf_annotations"] == 3


def test_with_no_warehouse_file_every_section_is_empty(resources):
    data = read_report.fn()
    assert data.warehouse is None and not resources.settings.warehouse.exists()
    assert not (data.tables or data.landed or data.usage or data.ratings or data.margins
                or data.picks or data.rounds or data.flags or data.training)
