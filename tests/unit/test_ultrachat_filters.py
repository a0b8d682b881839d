"""Filters: every reject carries a reason code, and counts by reason add up."""

import pytest

from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.filters import REJECT_REASONS, apply_filters, check, reject_rates
from tasks.core.ultrachat.recipe import UltraChatRecipe

RECIPE = UltraChatRecipe()


def dialogue(did="d1", sector="writing", turns=None, finish=None, stop="target_rounds",
             stop_role=None, other_language_ok=False):
    turns = turns or ["Write a haiku about rain.", "Soft rain on the roof.",
                      "Can you make it sadder?", "Grey rain on the roof."]
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(turns)]
    return DialogueRecord(dialogue_id=did, opening_id="o" + did, sector=sector,
                          target_rounds=len(msgs) // 2, rounds=len(msgs) // 2, stop_reason=stop,
                          stop_role=stop_role, messages=msgs,
                          finish_reasons=finish or ["stop"] * len(msgs),
                          other_language_ok=other_language_ok)


def reasons(d, recipe=RECIPE):
    return [r for r, _ in check(d, recipe)]


def test_good_dialogue_passes():
    assert reasons(dialogue()) == []


def test_too_few_rounds_uses_the_sector_minimum():
    one_round = dialogue(turns=["Write a haiku about rain.", "Soft rain on the roof."],
                         stop="repeated_turn", stop_role="user")
    assert reasons(one_round) == ["too_few_rounds"]
    two_world = dialogue(sector="world", turns=["Why rain?", "Clouds.", "Why clouds?", "Water."])
    assert reasons(two_world) == ["too_few_rounds"]  # world needs 3
    relaxed = UltraChatRecipe(filters={"min_rounds": 1})
    assert reasons(one_round, relaxed) == []


def test_too_many_rounds():
    d = dialogue(turns=["Why?", "Because."] * 5)
    assert "too_many_rounds" in reasons(d)


def test_empty_and_truncated_turns():
    assert reasons(dialogue(turns=["Write a haiku.", "  ", "Sadder?", "Grey rain."])) == ["empty_turn"]
    assert reasons(dialogue(finish=["stop", "length", "stop", "stop"])) == ["truncated_turn"]


def test_failed_tail_only_when_tails_are_not_dropped():
    d = dialogue(stop="truncated_turn", stop_role="assistant")
    assert reasons(d) == []
    assert reasons(d, UltraChatRecipe(filters={"drop_failed_tail": False})) == ["failed_tail"]


def test_role_leakage():
    d = dialogue(turns=["Write a haiku about rain.", "Soft rain on the roof.",
                        "User: can you make it sadder?", "Grey rain on the roof."])
    assert reasons(d) == ["role_leakage"]
    d = dialogue(turns=["Write a haiku about rain.", "Assistant: Soft rain on the roof.",
                        "Can you make it sadder?", "Grey rain on the roof."])
    assert reasons(d) == ["role_leakage"]


def test_language_mismatch_except_expected_translations():
    french = ("La pluie tombe doucement sur le toit de la maison pendant que les enfants dorment "
              "et que le chat regarde par la fenêtre")
    d = dialogue(turns=["Translate into French: rain falls.", french, "And more formal?", french + "."])
    assert reasons(d) == ["language_mismatch"]
    ok = dialogue(turns=[m["content"] for m in d.messages], other_language_ok=True)
    assert reasons(ok) == []
    assert reasons(ok, UltraChatRecipe(filters={"language": None})) == []


def test_bad_alternation():
    d = dialogue()
    d.messages[1]["role"] = "user"
    assert reasons(d)[0] == "bad_alternation"


def test_duplicates_keep_the_first_by_id_and_every_reject_has_a_reason():
    good = dialogue("a")
    dup = dialogue("b", turns=["write a haiku about rain", "Soft rain on the roof!",
                               "Can you make it sadder", "Grey rain on the roof."])
    short = dialogue("c", turns=["Hi?", "Hello."])
    kept, rejects = apply_filters([dup, short, good], RECIPE)
    assert [d.dialogue_id for d in kept] == ["a"]
    assert {(r.dialogue_id, r.reason) for r in rejects} == {("b", "duplicate_dialogue"),
                                                            ("c", "too_few_rounds")}
    assert all(r.reason in REJECT_REASONS and r.detail for r in rejects)
    assert rejects[0].detail == "same as a"
    rates = reject_rates(rejects, total=3)
    assert {r["reason"]: r["rejected"] for r in rates} == {"too_few_rounds": 1,
                                                          "duplicate_dialogue": 1}
    assert all(r["rate"] == pytest.approx(1 / 3, abs=1e-3) for r in rates)


def test_all_failing_reasons_are_kept_first_is_primary():
    d = dialogue(turns=["Write.", "", "User: more?", "x"], finish=["stop", "length", "stop", "stop"])
    _, [rej] = apply_filters([d], RECIPE)
    assert rej.reason == "empty_turn"
    assert rej.reasons == ["empty_turn", "truncated_turn", "role_leakage"]


def test_dialogue_without_a_complete_round_is_rejected_with_its_own_reason():
    d = DialogueRecord(dialogue_id="z", opening_id="oz", sector="writing", target_rounds=3,
                       rounds=0, stop_reason="refusal", stop_role="assistant",
                       messages=[{"role": "user", "content": "Write a haiku about rain."}],
                       finish_reasons=[None])
    for recipe in (RECIPE, UltraChatRecipe(filters={"min_rounds": 1, "drop_failed_tail": False})):
        kept, [rej] = apply_filters([d, dialogue("a")], recipe)
        assert [k.dialogue_id for k in kept] == ["a"]
        assert (rej.dialogue_id, rej.reason, rej.reasons) == ("z", "no_complete_round",
                                                             ["no_complete_round"])
        assert rej.detail == "first assistant reply failed: refusal"
