"""Role-aware reply text: one generator per route kind, each a pure function of an `Ask`."""

from __future__ import annotations

import re
from collections.abc import Callable

from infra.simulator.grading import critique, judge
from infra.simulator.prose import Writer, bank, content_words, topics
from infra.simulator.routes import Ask
from infra.simulator.tokens import PROSE_CHARS_PER_TOKEN

_MARKER = re.compile(r"^\s*(?:#+\s+|[-*]\s+|\d+[.)]\s+)?")


def answer(ask: Ask) -> str:
    """An assistant answer of a few paragraphs, ending `Confidence: NN%` when the system asks.

    Its length is drawn between `content.min_tokens` and the budget, and stays within the budget
    unless a single sentence is already too long.
    """
    rng, english = ask.rng, bank("english")
    w = Writer(rng, topics=topics(ask.prompt.last_user))
    chars = rng.randint(min(ask.content.min_tokens, ask.budget), ask.budget) * PROSE_CHARS_PER_TOKEN
    head = [w.pick(english["openers"])] if rng.random() < 0.5 else []
    tail = [w.pick(english["closers"])] if rng.random() < 0.5 else []
    if rng.random() < 0.3:
        head.append("\n".join(f"- {w.pick(english['bullets'])}" for _ in range(rng.randint(2, 4))))
    if chars - sum(len(p) + 2 for p in head + tail) < 200:  # too short for the extras
        head, tail = [], []
    if "Confidence:" in ask.prompt.system:
        tail.append(f"Confidence: {rng.randrange(50, 101, 5)}%")
    body = w.prose(chars - sum(len(p) + 2 for p in head + tail))
    return "\n\n".join([*head, body, *tail])


def user_turn(ask: Ask) -> str:
    """The next user message: a follow-up on the assistant's last words, or a new direction."""
    rng, dialogue, prompt = ask.rng, bank("dialogue"), ask.prompt
    # The assistant's last words, or (a dialogue sent as one transcript) the transcript's end.
    words = content_words(prompt.last_assistant) or content_words(prompt.last_user[-1200:])
    w = Writer(rng, topics=words)
    if words and rng.random() < 0.75:
        turn = w.pick(dialogue["follow_ups"])
    else:
        turn = w.pick(dialogue["changes_of_direction"])
    if ask.twist == "role_leak":
        sentence = w.pick(bank("english")["sentences"])
        turn = w.pick(dialogue["leaks"], turn=turn, sentence=sentence[0].lower() + sentence[1:])
    return turn


def translate(ask: Ask) -> str:
    """Japanese of similar length, line by line; code blocks and rating lines kept verbatim."""
    japanese = bank("japanese")
    keep = re.compile(japanese["keep_lines"])
    w = Writer(ask.rng, "japanese")
    out, fenced = [], False
    for line in _source_text(ask).split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```") or not line.strip() or keep.match(line):
            out.append(line)
            continue
        marker = _MARKER.match(line).group()
        body_chars = round((len(line) - len(marker)) * japanese["length_ratio"])
        out.append(marker + w.sentences(body_chars))
    return "\n".join(out)


def numbered_list(ask: Ask) -> str:
    """`1. …` to `N. …`, distinct items: questions, instructions or topic phrases by the prompt."""
    count = max(1, min(int(ask.match["count"]), ask.content.max_list_items))
    text = ask.prompt.text
    style = next((s for s, rx in ask.route.styles.items() if re.search(rx, text)), "topic")
    templates = bank("dialogue")[f"{style}s"]
    w = Writer(ask.rng, topics=topics(ask.prompt.last_user))
    items: list[str] = []
    seen: set[str] = set()
    for _ in range(count * 20):
        if len(items) == count:
            break
        item = w.pick(templates)
        if item.lower() not in seen:
            seen.add(item.lower())
            items.append(item)
    while len(items) < count:  # the banks ran out of combinations: mark repeats apart
        items.append(f"Part {len(items) + 1}: {w.pick(templates)}")
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))


def _source_text(ask: Ask) -> str:
    """What to translate: the last user message after the instruction line (or all of it)."""
    user, match = ask.prompt.last_user, ask.match
    offset = len(ask.prompt.text) - len(user)
    if match.start() < offset:  # the instruction is in the system message
        return user
    rest_of_line, _, after = user[match.end() - offset :].partition("\n")
    return after.strip("\n") or rest_of_line.partition(":")[2].strip() or user


GENERATORS: dict[str, Callable[[Ask], str]] = {
    "judge": judge,
    "critique": critique,
    "user_turn": user_turn,
    "translate": translate,
    "list": numbered_list,
    "answer": answer,
}


def compose(ask: Ask) -> str:
    """The reply text for one choice, by the route's kind."""
    return GENERATORS[ask.route.kind](ask)
