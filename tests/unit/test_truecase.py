"""The SFT set's per-dialogue text rules (tasks/core/derived/sft.py): truecasing of sentence
starts, what it leaves alone, and the AI-disclaimer phrase filter."""

from __future__ import annotations

import pytest

from tasks.core.derived.sft import DISCLAIMERS, disclaimer, phrases, truecase

BUILTIN = phrases(str(DISCLAIMERS))


# -- truecasing: what it repairs --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("hello. how are you?", "Hello. How are you?"),
    ("hello", "Hello"),
    ("wow! great? yes, thanks.", "Wow! Great? Yes, thanks."),
    ("is it?\nyes.", "Is it?\nYes."),
    ("first part.\n\nsecond part.", "First part.\n\nSecond part."),
    ("it ended (badly.) then we left.", "It ended (badly.) Then we left."),
    ("use `x`. then run it.", "Use `x`. Then run it."),
    ("pi is 3.14. next digit?", "Pi is 3.14. Next digit?"),
    ("me. i think so.", "Me. I think so."),
])
def test_truecase_capitalizes_message_starts_and_sentence_starts(text, want):
    assert truecase(text) == want


# -- truecasing: what it leaves alone ---------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Look:\n```python\nx = compute(). y = other()\nprint(x)\n```",  # fenced code
    "Call `run(). then stop()` to finish.",  # inline code
    "```\nunclosed. fence until the end",  # an unclosed fence runs to the end
    "Some fruit, e.g. apples and pears.",
    "One rule, i.e. this one.",
    "Ask Dr. smith about it.",
    "Pens, paper, etc. are provided.",
    "The U.S. economy grew.",
    "Wait... what happened?",
    "Wait.. what happened?",
    "It costs 3.5 dollars.",
    "Save it. file.txt holds the rest.",
    "Done. config.yaml is next.",
    "Open it. http://x is the page.",
    "Open it. https://example.com/a is the page.",
    "Open it. www.example.com is the page.",
    "Set it. x_1 is the first.",
    "Set it. var2 = 3 is the second.",
    "Set it. foo_bar() runs next.",
    "Call it. self(x) is a method call.",
    '"Done," she said.',
    'She said "ok." then left.',
    "Already fine. Nothing to do! Really?",
    "iPhone sales rose. eBay fell. mRNA vaccines work. iOS updates.",  # cased on purpose
])
def test_truecase_leaves_code_abbreviations_ellipses_paths_quotes_and_cased_names_alone(text):
    assert truecase(text) == text


@pytest.mark.parametrize("text", [
    "hello. how are you?", "e.g. this. and that", "ok... fine. yes", "a.m. start. end",
    "x? (maybe) y. z", "```\nno. change\n```\nafter. this", '"done," she said. then left',
])
def test_truecase_is_idempotent(text):
    once = truecase(text)
    assert truecase(once) == once


def test_truecase_changes_only_the_case_of_single_letters():
    text = "one. two! three? four.\nfive e.g. six `seven. eight` nine... ten"
    out = truecase(text)
    assert len(out) == len(text) and out.lower() == text.lower()
    assert [i for i, (a, b) in enumerate(zip(text, out, strict=True)) if a != b] == [
        0, 5, 10, 17, 23]


# -- disclaimers ------------------------------------------------------------------------------------

# realistic assistant sentences; every builtin phrase must match at least one of them
DISCLAIMING = [
    "As an AI, I cannot taste food, but here is a recipe.",
    "As an AI language model, I cannot browse your files.",
    "As an artificial intelligence, I do not form attachments.",
    "As a language model, I can only offer general advice.",
    "As a large language model, I am not able to vote.",
    "As a chatbot, I cannot see your screen.",
    "As a machine learning model, I have no way of knowing.",
    "I am just an AI, so please consult a doctor.",
    "I'm an artificial intelligence and cannot travel.",
    "I’m only a language model, but I can try.",
    "I don't have personal opinions, but here are both sides.",
    "I do not have emotions like humans do.",
    "I don’t have emotions, but I understand why you are upset.",
    "I don't have personal experiences with hiking.",
    "I do not have a physical body, so I cannot exercise.",
    "I cannot feel emotions the way people do.",
    "I am not capable of feeling emotions.",
    "I am not able to experience feelings the way you do.",
    "I do not have the ability to feel pain.",
    "I can't browse the internet for the latest prices.",
    "I am unable to access the web right now.",
    "I cannot search the internet, but I can explain the idea.",
    "I don't have access to real-time information about the weather.",
    "My training data only goes up to 2021.",
    "My knowledge extends up to September 2021.",
    "As of my last knowledge cutoff, the law had not changed.",
    "As of my last update, the bridge was still open.",
]
BENIGN = [
    "The AI industry grew quickly last year.",
    "I have an opinion piece here that you might enjoy.",
    "Many people say they don't have opinions on tax policy.",
    "You don't have emotions to hide; share them.",
    "Was it an AI? Nobody knew.",
    "Her role as an aide was to schedule meetings.",
    "She worked as a language teacher in Spain.",
    "My data goes to the server every hour.",
    "Thai food is spicy, and I have feelings about that.",
]


def assistant(*texts: str) -> list[dict[str, str]]:
    out = []
    for t in texts:
        out += [{"role": "user", "content": "Tell me something."},
                {"role": "assistant", "content": t}]
    return out


def test_the_builtin_file_has_phrases_and_each_matches_a_realistic_sentence():
    assert len(BUILTIN) >= 10
    for phrase, pattern in BUILTIN:
        assert any(pattern.search(s) for s in DISCLAIMING), f"no example for {phrase!r}"


@pytest.mark.parametrize("sentence", DISCLAIMING)
def test_a_disclaiming_assistant_turn_matches_a_builtin_phrase(sentence):
    assert disclaimer(assistant(sentence), BUILTIN) is not None


def test_the_match_names_the_first_phrase_in_file_order_and_spots_a_later_turn():
    first_phrase = BUILTIN[0][0]
    assert first_phrase == r"as an ai (?:language )?model"  # before the bare "as an ai\b"
    msgs = assistant("Sure, here it is.", "As an AI language model, I don't have opinions.")
    assert disclaimer(msgs, BUILTIN) == first_phrase
    feelings = [p for p, _ in BUILTIN if p.startswith("i (?:do not|don't) have (?:any )?(?:per")]
    assert disclaimer(assistant("I don’t have emotions."), BUILTIN) == feelings[0]


@pytest.mark.parametrize("sentence", ["I'm not capable of feeling emotions.",
                                      "I’m unable to browse the internet.",
                                      "I am not able to have opinions."])
def test_contracted_i_m_not_and_i_m_unable_forms_match(sentence):
    assert disclaimer(assistant(sentence), BUILTIN) is not None


@pytest.mark.parametrize("sentence", BENIGN)
def test_a_benign_sentence_matches_no_phrase(sentence):
    assert disclaimer(assistant(sentence), BUILTIN) is None


def test_only_assistant_turns_are_searched():
    msgs = [{"role": "user", "content": "As an AI language model, do you have opinions?"},
            {"role": "assistant", "content": "Opinions are beliefs people hold."}]
    assert disclaimer(msgs, BUILTIN) is None
    assert disclaimer([*msgs, {"role": "user", "content": "I don't have emotions."}],
                      BUILTIN) is None


def test_a_custom_phrase_file_skips_comments_and_blanks_and_matches_case_insensitively(tmp_path):
    path = tmp_path / "phrases.txt"
    path.write_text("# my list\n\nbeep boop\nrobot's (?:heart|soul)\n", encoding="utf-8")
    got = phrases(str(path))
    assert [p for p, _ in got] == ["beep boop", "robot's (?:heart|soul)"]
    assert disclaimer(assistant("BEEP BOOP, human."), got) == "beep boop"
    assert disclaimer(assistant("A robot’s heart is cold."), got) == "robot's (?:heart|soul)"
    assert disclaimer(assistant("Xbeep boop"), got) is None  # phrases start at a word boundary


def test_a_bad_regex_line_is_a_value_error_naming_the_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("# comment\nas an ai\n(unclosed group\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path} line 3: not a regular expression"):
        phrases(str(path))
