"""The dialogue state machine: alternation, rounds sampling, stop rules, re-asks, resumable keys."""

from collections import Counter

from tasks.core.chat import ChatResult, Usage
from tasks.core.ultrachat.dialogue import DialogueState, sample_rounds
from tasks.core.ultrachat.openings import Opening
from tasks.core.ultrachat.recipe import UltraChatRecipe

RECIPE = UltraChatRecipe(seed=7)


def reply(text, finish="stop", ok=True):
    return ChatResult(key="k", model="m", api_model="m", endpoint="local", text=text if ok else None,
                      finish_reason=finish, usage=Usage(prompt_tokens=10, completion_tokens=5),
                      error=None if ok else "gave up after 8 attempts: HTTP 503")


def run(state, script):
    """Feed scripted replies (a callable of (role, n) or a list) until the dialogue stops."""
    sent = []
    while (req := state.next_request()) is not None:
        role = "user" if req.messages[0]["role"] == "system" and "playing the user" in \
            req.messages[0]["content"] else "assistant"
        sent.append((role, req))
        state.receive(script(role, len(sent)))
    return sent


def opening(sector="world", text="How do tides work?"):
    return Opening.make(sector, text)


def fresh_user(role, n):
    return reply(f"Interesting, and what about case number {n}?" if role == "user"
                 else f"Here is answer number {n} about tides and the moon.")


def test_rounds_are_sampled_in_sector_range_and_seeded_by_opening():
    for sector, (lo, hi) in (("world", (3, 7)), ("writing", (2, 4)), ("materials", (2, 4))):
        seen = Counter(sample_rounds(RECIPE, opening(sector, f"question {i}?")) for i in range(300))
        assert set(seen) == set(range(lo, hi + 1))
    o = opening()
    assert sample_rounds(RECIPE, o) == sample_rounds(RECIPE, o)
    other = UltraChatRecipe(seed=8)
    assert [sample_rounds(RECIPE, opening("world", f"q{i}?")) for i in range(20)] != \
        [sample_rounds(other, opening("world", f"q{i}?")) for i in range(20)]


def test_full_dialogue_alternates_and_stops_at_target_rounds():
    state = DialogueState(RECIPE, opening())
    sent = run(state, fresh_user)
    assert state.stop_reason == "target_rounds"
    assert state.rounds == state.target_rounds
    assert [m["role"] for m in state.messages] == ["user", "assistant"] * state.rounds
    assert state.messages[0]["content"] == "How do tides work?"
    assert len(sent) == 2 * state.rounds - 1
    # each assistant request carries the whole dialogue so far: the resume unit is one turn
    assistant_reqs = [r for role, r in sent if role == "assistant"]
    assert [len(r.messages) for r in assistant_reqs] == [1 + 2 * i for i in range(state.rounds)]
    # the user simulator sees a transcript in one message, never a role-flipped history
    user_reqs = [r for role, r in sent if role == "user"]
    assert all([m["role"] for m in r.messages] == ["system", "user"] for r in user_reqs)
    assert "Here is answer number 1" in user_reqs[0].messages[1]["content"]


def test_same_opening_gives_same_requests():
    a, b = DialogueState(RECIPE, opening()), DialogueState(RECIPE, opening())
    keys = [[r.key("m", r.params) for _, r in run(s, fresh_user)] for s in (a, b)]
    assert keys[0] == keys[1]
    assert a.dialogue_id == b.dialogue_id


def test_role_labels_are_stripped_not_kept():
    state = DialogueState(RECIPE, opening())
    run(state, lambda role, n: reply(f"User: And what about case {n}?") if role == "user"
        else reply(f"Answer {n}."))
    assert state.stop_reason == "target_rounds"
    assert all(not m["content"].startswith("User:") for m in state.messages)
    assert state.stripped == state.rounds - 1
    assert {t.verdict for t in state.turns if t.role == "user"} == {"stripped"}


def test_assistant_sounding_user_turn_is_reasked_with_a_new_request():
    calls = Counter()

    def script(role, n):
        if role == "assistant":
            return reply(f"Answer {n}.")
        calls["user"] += 1
        return reply("Certainly! Here is a detailed answer: the moon.") if calls["user"] == 1 \
            else reply(f"Hm, and why case {n}?")

    state = DialogueState(RECIPE, opening())
    sent = run(state, script)
    user_reqs = [r for role, r in sent if role == "user"]
    assert user_reqs[0].sample_index == 0 and user_reqs[1].sample_index == 1
    assert user_reqs[0].messages != user_reqs[1].messages  # a different body, not a blind repeat
    assert state.stop_reason == "target_rounds"
    assert [t.verdict for t in state.turns if t.role == "user"][0] == "user_reads_like_assistant"
    assert not any("Certainly" in m["content"] for m in state.messages)


def test_assistant_sounding_user_stops_after_max_reasks():
    state = DialogueState(RECIPE, opening())
    sent = run(state, lambda role, n: reply("As an AI assistant, I can explain that tides...")
               if role == "user" else reply(f"Answer {n}."))
    assert state.stop_reason == "user_reads_like_assistant" and state.stop_role == "user"
    user_reqs = [r for role, r in sent if role == "user"]
    assert len(user_reqs) == 1 + RECIPE.dialogue.max_reasks
    bodies = {r.key("m", r.params) for r in user_reqs}
    assert len(bodies) == len(user_reqs)  # every re-ask is a different request body
    assert [r.params.get("seed") for r in user_reqs] == [None, 1, 2]
    assert state.rounds == 1 and state.messages[-1]["role"] == "assistant"


def test_repeated_user_turn_stops():
    state = DialogueState(RECIPE, opening())  # world: at least 3 rounds wanted
    run(state, lambda role, n: reply("And what about the moon?") if role == "user"
        else reply(f"Answer {n}."))
    assert (state.stop_reason, state.stop_role, state.rounds) == ("repeated_turn", "user", 2)


def test_empty_refused_or_truncated_assistant_turn_drops_the_round_and_stops():
    for bad, reason in ((reply(""), "empty_turn"),
                        (reply("I'm sorry, but I can't help with that."), "refusal"),
                        (reply("The moon pulls", finish="length"), "truncated_turn")):
        state = DialogueState(RECIPE, opening())
        run(state, lambda role, n, bad=bad: bad if (role == "assistant" and n > 2)
            else fresh_user(role, n))
        assert state.stop_reason == reason and state.stop_role == "assistant"
        assert state.rounds == 1
        assert [m["role"] for m in state.messages] == ["user", "assistant"]
        assert state.turns[-1].verdict == reason and not state.turns[-1].accepted


def test_empty_user_turn_stops():
    state = DialogueState(RECIPE, opening())
    run(state, lambda role, n: reply("   ") if role == "user" else reply(f"Answer {n}."))
    assert (state.stop_reason, state.stop_role, state.rounds) == ("empty_turn", "user", 1)


def test_token_budget_stops_before_the_next_round():
    recipe = UltraChatRecipe(seed=7, dialogue={"max_dialogue_tokens": 100})
    state = DialogueState(recipe, opening())
    run(state, lambda role, n: reply("word " * 150) if role == "assistant"
        else reply(f"Why {n}?"))
    assert state.stop_reason == "token_budget" and state.rounds == 1


def test_failed_request_is_recorded():
    state = DialogueState(RECIPE, opening())
    run(state, lambda role, n: reply(None, ok=False))
    assert state.stop_reason == "request_failed" and "503" in state.error
    assert state.rounds == 0


def test_record_is_a_plain_row():
    state = DialogueState(RECIPE, opening("materials", "Summarize: text."))
    run(state, fresh_user)
    row = state.record()
    assert row["sector"] == "materials" and row["stop_reason"] == "target_rounds"
    assert row["messages"][0] == {"role": "user", "content": "Summarize: text."}
    assert len(row["finish_reasons"]) == len(row["messages"])


def test_truncated_user_turn_is_reasked_then_stops():
    calls = Counter()

    def script(role, n):
        if role == "assistant":
            return reply(f"Answer {n}.")
        calls["user"] += 1
        return reply("And what about", finish="length") if calls["user"] == 1 else reply(f"Why {n}?")

    state = DialogueState(RECIPE, opening())
    run(state, script)
    assert state.stop_reason == "target_rounds"
    assert [t.verdict for t in state.turns if t.role == "user"][:2] == ["truncated_turn", "ok"]

    state = DialogueState(RECIPE, opening())
    run(state, lambda role, n: reply("And what", finish="length") if role == "user"
        else reply(f"Answer {n}."))
    assert (state.stop_reason, state.stop_role, state.rounds) == ("truncated_turn", "user", 1)


def test_failed_first_assistant_reply_keeps_the_opening_and_no_round():
    for bad, reason in ((reply(""), "empty_turn"),
                        (reply("I'm sorry, but I can't help with that."), "refusal"),
                        (reply("The moon pulls", finish="length"), "truncated_turn")):
        state = DialogueState(RECIPE, opening())
        sent = run(state, lambda role, n, bad=bad: bad)
        assert len(sent) == 1
        assert (state.stop_reason, state.stop_role, state.rounds) == (reason, "assistant", 0)
        row = state.record()
        assert row["messages"] == [{"role": "user", "content": "How do tides work?"}]
        assert row["finish_reasons"] == [None] and row["rounds"] == 0
