"""Exports: the raw {"id", "data"} shape with stable ids, and messages rows."""

import json

import pytest

from tasks.core.ids import prompt_id, to_jsonl
from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.export import messages_rows, raw_rows


def d(did, sector, opening_id, texts):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]
    return DialogueRecord(dialogue_id=did, opening_id=opening_id, sector=sector, target_rounds=1,
                          rounds=len(msgs) // 2, stop_reason="target_rounds", messages=msgs)


def did(name):
    return prompt_id(name)  # a 64-hex dialogue id, as dialogue_key makes them


X, Y, W, V = (did(n) for n in "xywv")
DS = [d(X, "materials", "a", ["Sum up: é", "Short."]), d(Y, "world", "z", ["Why?", "Because."]),
      d(W, "world", "b", ["How?", "Thus."]), d(V, "writing", "c", ["Write.", "Done."])]


def test_rows_follow_sector_order_then_opening_id_regardless_of_input_order():
    rows = raw_rows(DS)
    assert rows == [{"id": W[:16], "data": ["How?", "Thus."]},
                    {"id": Y[:16], "data": ["Why?", "Because."]},
                    {"id": V[:16], "data": ["Write.", "Done."]},
                    {"id": X[:16], "data": ["Sum up: é", "Short."]}]
    assert raw_rows(list(reversed(DS))) == rows


def test_ids_stay_the_same_when_more_dialogues_are_added():
    before = {r["data"][0]: r["id"] for r in raw_rows(DS)}
    more = [d(did("u"), "world", "a0", ["First?", "Yes."]), d(did("t"), "materials", "0", ["Hm.", "Ok."])]
    after = {r["data"][0]: r["id"] for r in raw_rows(DS + more)}
    assert {k: after[k] for k in before} == before and len(after) == 6


def test_two_dialogues_sharing_an_id_prefix_are_refused_not_merged():
    twin = d(X[:16] + "0" * 48, "world", "q", ["Other?", "Yes."])
    with pytest.raises(ValueError, match=f"share export id {X[:16]}"):
        raw_rows([*DS, twin])


def test_jsonl_is_utf8_one_object_a_line():
    data = to_jsonl(raw_rows(DS))
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == 4 and json.loads(lines[3])["data"][0] == "Sum up: é"
    assert "é" in lines[3]  # not escaped
    assert lines[0] == f'{{"id": "{W[:16]}", "data": ["How?", "Thus."]}}'


def test_messages_rows_match_ultrachat_200k_schema():
    rows = messages_rows(DS)
    assert rows[0]["prompt"] == "How?" and rows[0]["prompt_id"] == prompt_id("How?")
    assert rows[0]["messages"] == [{"content": "How?", "role": "user"},
                                   {"content": "Thus.", "role": "assistant"}]
    assert [r["id"] for r in rows] == [W[:16], Y[:16], V[:16], X[:16]]
