"""The simulator's translation route over real HTTP with the official openai client: placeholders
and Markdown structure kept, Japanese of about half the length, and the translation faults."""

from __future__ import annotations

import re

import openai

from infra.simulator.prose import bank
from infra.simulator.tokens import count_tokens

SYSTEM = "Translate the user's text into Japanese. Keep every placeholder ⟦n⟧ exactly once."
SOURCE = """## Getting started with the command line tool

Install the package with ⟦1⟧ and then run ⟦2⟧ to check which version you have.

⟦3⟧

- The ⟦4⟧ option controls how long the client waits for a reply before giving up.
* Short item
+ Another item with `inline code` kept
1. The configuration file is read once at startup and validated against the schema.
2) Second step
> A quoted paragraph about the documentation and the examples it contains.
> - A quoted bullet

| Name | Description | Default |
|------|:------------|--------:|
| timeout | How long to wait for a reply | ⟦5⟧ |
| retries | | 3 |

⟦6⟧"""
PROSE = (
    "Good documentation explains not only what a function does but also why it exists. Readers "
    "who understand the reasons behind a design make fewer mistakes when they extend it, and they "
    "ask better questions when something is unclear. Short examples help more than long "
    "descriptions, because they show the expected input and output at a glance.\n\n"
    "When a project grows, keeping its guides up to date becomes harder. A simple habit is to "
    "review the relevant pages whenever the behaviour of a feature changes, and to remove advice "
    "that no longer applies instead of adding exceptions to it."
)
PLACEHOLDER = re.compile(r"⟦\d+⟧")
MARKER = re.compile(r"^\s*(?:>\s*)*(?:#+\s+|[-*+]\s+|\d+[.)]\s+)?")
JAPANESE = re.compile(r"[\u3000-\u30ff\u4e00-\u9fff\uff00-\uffef]")
FENCED = "```python\nprint('keep me')\n```"


def translate(sim, source: str, **params):
    """One translation request: the first choice."""
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": source}]
    return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **params).choices[0]


def text_of(sim, source: str, **params) -> str:
    return translate(sim, source, **params).message.content


def japanese_share(text: str) -> float:
    """Japanese characters among the letters and Japanese characters outside kept spans."""
    text = re.sub(r"⟦\d+⟧|`[^`]+`", "", text)
    japanese = len(JAPANESE.findall(text))
    return japanese / (japanese + len(re.findall(r"[A-Za-z]", text)))


# --- a normal translation ------------------------------------------------------------------


def test_placeholders_and_markdown_structure_survive(simulator):
    text = text_of(simulator, SOURCE)
    assert PLACEHOLDER.findall(text) == PLACEHOLDER.findall(SOURCE)  # each once, in order
    assert "`inline code`" in text
    source_lines, lines = SOURCE.split("\n"), text.split("\n")
    assert len(lines) == len(source_lines)
    for src, out in zip(source_lines, lines, strict=True):
        assert MARKER.match(out).group() == MARKER.match(src).group()
        if not re.search(r"[A-Za-z]", src):
            assert out == src  # blank, placeholder and table separator lines
        elif src.startswith("|"):
            assert out.count("|") == src.count("|") and out != src
            empty = [[c.strip() for c in row.split("|")].count("") for row in (src, out)]
            assert empty[0] == empty[1]  # empty cells stay empty
    assert "|------|:------------|--------:|" in lines
    assert japanese_share(text) > 0.95


def test_prose_is_japanese_of_about_half_the_length(simulator):
    text = text_of(simulator, PROSE)
    assert japanese_share(text) == 1.0
    assert text.count("\n\n") == PROSE.count("\n\n")
    assert 0.35 < len(text) / len(PROSE) < 0.8  # japanese.yaml: length_ratio 0.5


def test_same_request_gives_the_same_text_and_a_changed_seed_another(simulator):
    first = text_of(simulator, SOURCE, seed=1)
    assert text_of(simulator, SOURCE, seed=1) == first
    assert text_of(simulator, SOURCE, seed=2) != first


# --- faults --------------------------------------------------------------------------------


def test_untranslated_returns_the_source(make_simulator):
    sim = make_simulator(overrides={"faults.untranslated": 1.0})
    assert text_of(sim, SOURCE) == SOURCE
    stats = sim.stats()
    assert stats["by_outcome"]["untranslated"] == 1 and stats["by_twist"]["untranslated"] == 1


def test_broken_code_drops_or_alters_one_placeholder(make_simulator):
    sim, clean = make_simulator(overrides={"faults.broken_code": 1.0}), make_simulator()
    expected = PLACEHOLDER.findall(SOURCE)
    for i in range(8):
        source = f"{SOURCE}\nNote {i}."
        text, intact = text_of(sim, source), text_of(clean, source)
        found = PLACEHOLDER.findall(text)
        assert found != expected and len(found) == len(expected) - 1  # one lost or altered
        assert len(intact) - 3 <= len(text) <= len(intact)  # the rest untouched
    assert sim.stats()["by_twist"]["broken_code"] == 8


def test_broken_code_breaks_a_raw_fenced_block(make_simulator):
    sim = make_simulator(overrides={"faults.broken_code": 1.0})
    for i in range(6):
        source = f"Run this snippet number {i} to see the greeting.\n\n{FENCED}\n\nIt prints one line."
        text = text_of(sim, source)
        assert FENCED not in text
        assert text.count("```") < 2 or "print('keep me')" not in text  # a fence dropped or the code altered


def test_broken_code_spares_text_without_code(make_simulator):
    sim = make_simulator(overrides={"faults.broken_code": 1.0})
    assert text_of(sim, PROSE) == text_of(make_simulator(), PROSE)
    stats = sim.stats()
    assert stats["by_outcome"]["ok"] == 1 and stats["by_twist"]["broken_code"] == 0


def test_commentary_adds_a_preamble_or_a_note(make_simulator):
    sim, clean = make_simulator(overrides={"faults.commentary": 1.0}), make_simulator()
    forms = set()
    for i in range(12):
        source = f"{SOURCE}\nNote {i}."
        text, intact = text_of(sim, source), text_of(clean, source)
        before, found, after = text.partition(intact)
        assert found == intact and (before or after)
        assert before in ("", *(f"{p}\n\n" for p in bank("japanese")["preambles"]))
        assert after == "" or re.fullmatch(r"\n\n（注：[^\n]+）", after)
        forms.add((bool(before), bool(after)))
    assert forms == {(True, False), (False, True), (True, True)}
    assert sim.stats()["by_outcome"]["commentary"] == 12


def test_truncation_cuts_a_prefix_with_finish_reason_length(make_simulator):
    sim = make_simulator(overrides={"faults.length": 1.0})
    choice, full = translate(sim, SOURCE), text_of(make_simulator(), SOURCE)
    assert choice.finish_reason == "length"
    assert full.startswith(choice.message.content) and len(choice.message.content) < len(full)
    short = translate(make_simulator(), SOURCE, max_tokens=20)  # and by max_tokens, as any route
    assert short.finish_reason == "length" and count_tokens(short.message.content) <= 20
    assert sim.stats()["by_twist"]["length"] == 1


def test_a_changed_request_seed_or_a_resend_redraws_the_fault(make_simulator):
    sim = make_simulator(overrides={"faults.untranslated": 0.5})
    # A different `seed` field: a different body hash, each body at its first attempt.
    by_seed = [text_of(sim, SOURCE, seed=s) == SOURCE for s in range(12)]
    assert any(by_seed) and not all(by_seed)
    # The same body again: its next attempt, a fresh draw; translated attempts read alike.
    texts = [text_of(sim, SOURCE, seed=99) for _ in range(12)]
    assert SOURCE in texts and len(set(texts)) == 2


def test_stats_count_translations_and_each_twist(make_simulator):
    overrides = {"faults.untranslated": 0.5, "faults.commentary": 0.5}  # exclusive: one per choice
    sim = make_simulator(overrides=overrides)
    for i in range(3):
        translate(sim, f"{SOURCE}\nNote {i}.", n=4)
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Why is the sea salty?"}])
    stats = sim.stats()
    assert stats["by_kind"] == {"translate": 3, "answer": 1}
    twists = stats["by_twist"]
    assert twists["untranslated"] + twists["commentary"] == 12  # 3 requests × 4 choices
    assert twists["untranslated"] > 0 < twists["commentary"]
    assert twists["broken_code"] == twists["malformed"] == 0
    outcomes = {k: v for k, v in stats["by_outcome"].items() if v}
    assert sum(outcomes.values()) == stats["requests"] == 4 and outcomes["ok"] == 1  # the answer
