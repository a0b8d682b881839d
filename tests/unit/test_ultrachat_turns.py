"""Turn judging: role-label stripping, leakage, refusals, assistant-sounding user turns, language."""

import pytest

from tasks.core.ultrachat.language import language_mismatch
from tasks.core.ultrachat.text import cut_at_sentence, normalize, parse_numbered_list
from tasks.core.ultrachat.turns import (
    has_role_leakage,
    is_refusal,
    reads_like_assistant,
    same_turn,
    strip_leading_label,
    strip_role_labels,
)


@pytest.mark.parametrize(("raw", "clean"), [
    ("User: How do tides work?", "How do tides work?"),
    ("**User:** How do tides work?", "How do tides work?"),
    ("[User]: How do tides work?", "How do tides work?"),
    ("Human - How do tides work?", "How do tides work?"),
    ("[You]\nHow do tides work?", "How do tides work?"),
    ('"How do tides work?"', "How do tides work?"),
    ("As the user, I would ask: How do tides work?", "How do tides work?"),
    ("Here is my next message: How do tides work?", "How do tides work?"),
    ("Next question: How do tides work?", "How do tides work?"),
    ("User: \"How do tides work?\"", "How do tides work?"),
    ("How do tides work?\nAssistant: Tides are caused by...", "How do tides work?"),
])
def test_strip_role_labels_removes_labels_meta_and_other_side(raw, clean):
    text, stripped = strip_role_labels(raw)
    assert text == clean
    assert stripped
    assert not has_role_leakage(text)


def test_strip_role_labels_leaves_clean_turns_alone():
    for turn in ("How do tides work?", "Usernames: can they contain spaces?",
                 "As a user of Linux, how do I list open ports?",
                 'My teacher said "tides are slow". Is that right?'):
        assert strip_role_labels(turn) == (turn, False)
        assert not has_role_leakage(turn)


def test_leakage_detected_in_user_turns_anywhere_and_assistant_turns_at_start():
    assert has_role_leakage("Thanks!\nUser: and what about waves?")
    assert has_role_leakage("As the user, I'd like to know more.")
    assert has_role_leakage("I'm playing the user here, so: why?")
    assert has_role_leakage("Assistant: Tides are...", role="assistant")
    # a scripted dialogue inside an answer is content, not leakage
    assert not has_role_leakage("Here is a script:\nUser: hi\nBot: hello", role="assistant")


def test_strip_leading_label_for_assistant_turns():
    assert strip_leading_label("Assistant: Tides are caused by the moon.") == (
        "Tides are caused by the moon.", True)
    assert strip_leading_label("Tides: a primer.") == ("Tides: a primer.", False)


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with that.",
    "I cannot assist with this request.",
    "Sorry, I am unable to provide that information.",
    "Unfortunately I won't be able to continue this conversation.",
])
def test_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize("text", [
    "I can't believe how fast that is! Why does it happen?",
    "Tides rise twice a day. I'm sorry to say the cause is often misunderstood.",
    "Sorry, one more thing: what about neap tides?",
])
def test_not_refusals(text):
    assert not is_refusal(text)


@pytest.mark.parametrize("text", [
    "Certainly! Here is a detailed answer: tides come from gravity.",
    "As an AI assistant, I can explain that tides come from gravity.",
    "Sure! I'd be happy to help with that.",
    "Great question. The moon pulls the ocean.",
    "The moon pulls the ocean towards it. I hope this helps!",
    "Tides follow the moon. Let me know if you have any other questions.",
])
def test_user_turns_that_read_like_an_assistant(text):
    assert reads_like_assistant(text)


@pytest.mark.parametrize("text", [
    "Could you say more about spring tides?",
    "Thanks. Are there any risks with tidal energy I should watch out for?",
    "Here is my draft intro, can you tighten it?",
    "Sure, but why twice a day?",
])
def test_user_turns_that_read_like_a_user(text):
    assert not reads_like_assistant(text)


def test_same_turn_ignores_case_punctuation_and_space():
    assert same_turn("Why is the sky blue?", "why is  the sky blue")
    assert not same_turn("Why is the sky blue?", "Why is the sea blue?")
    assert normalize("  Héllo,   WORLD! ") == "héllo world"


def test_numbered_lists_parse_with_preamble_markup_and_bullets():
    text = ("Here are some subtopics:\n1. **Tides** and currents\n2) \"Sea level rise\"\n"
            "- Coastal erosion\n\nThat is all.")
    assert parse_numbered_list(text) == ["Tides and currents", "Sea level rise", "Coastal erosion"]
    assert parse_numbered_list(text, limit=2) == ["Tides and currents", "Sea level rise"]
    assert parse_numbered_list("no list here") == []


def test_cut_at_sentence():
    text = "One two. Three four five. Six seven eight nine."
    assert cut_at_sentence(text, 100) == text
    assert cut_at_sentence(text, 30) == "One two. Three four five."


def test_language_mismatch_is_conservative():
    assert not language_mismatch("Why?", "en")
    assert not language_mismatch("How do tides work and why are there two a day?", "en")
    assert language_mismatch("潮汐はどのように起こるのですか？月の引力が関係していると聞きました。", "en")
    assert language_mismatch(
        "La marée est un phénomène lié à la lune et au soleil qui provoque une montée puis une "
        "descente régulière du niveau de la mer sur les côtes", "en")
    assert not language_mismatch("潮汐はどのように起こるのですか？月の引力が関係していると聞きました。", "ja")
    assert not language_mismatch("anything at all here", "xx")
