"""Exports: the raw {"id", "data"} shape with stable ids, and messages rows."""

import json

from tasks.core.ids import prompt_id, to_jsonl
from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.export import messages_rows, raw_rows


def d(did, sector, opening_id, texts):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    return DialogueRecord(dialogue_id=did, opening_id=opening_id, sector=sector, target_rounds=1,
                          rounds=len(msgs) // 2, stop_reason="target_rounds", messages=msgs)


DS = [d("x", "materials", "a", ["Sum up: é", "Short."]), d("y", "world", "z", ["Why?", "Because."]),
      d("w", "world", "b", ["How?", "Thus."]), d("v", "writing", "c", ["Write.", "Done."])]


def test_ids_follow_sector_order_then_opening_id_regardless_of_input_order():
    rows = raw_rows(DS)
    assert rows == [{"id": "0", "data": ["How?", "Thus."]}, {"id": "1", "data": ["Why?", "Because."]},
                    {"id": "2", "data": ["Write.", "Done."]}, {"id": "3", "data": ["Sum up: é", "Short."]}]
    assert raw_rows(list(reversed(DS))) == rows


def test_jsonl_is_utf8_one_object_a_line():
    data = to_jsonl(raw_rows(DS))
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["data"][0] == "Sum up: é"
    assert "é" in lines[3]  # not escaped
    assert lines[0] == '{"id": "0", "data": ["How?", "Thus."]}'


def test_messages_rows_match_ultrachat_200k_schema():
    rows = messages_rows(DS)
    assert rows[0]["prompt"] == "How?" and rows[0]["prompt_id"] == prompt_id("How?")
    assert rows[0]["messages"] == [{"content": "How?", "role": "user"},
                                   {"content": "Thus.", "role": "assistant"}]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
