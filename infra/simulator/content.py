"""Role-aware reply text: one generator per route kind, each a pure function of an `Ask`."""

from __future__ import annotations

import re
from collections.abc import Callable

from infra.simulator.grading import critique, judge
from infra.simulator.prose import Writer, bank, content_words, topics
from infra.simulator.routes import Ask
from infra.simulator.tokens import PROSE_CHARS_PER_TOKEN

# A line's Markdown prefix, kept by a translation: indent, blockquotes, then a heading, bullet
# or number marker.
_MARKER = re.compile(r"^\s*(?:>\s*)*(?:#+\s+|[-*+]\s+|\d+[.)]\s+)?")
_FENCE = re.compile(r"^\s*```", re.M)
_PLACEHOLDER = re.compile(r"⟦(\d+)⟧")  # a span the client masked, to be copied exactly once
# Copied verbatim inside a line: placeholders, inline code (unmasked sources) and table pipes.
_VERBATIM = re.compile(r"(⟦\d+⟧|`[^`\n]+`|(?<!\\)\|)")
_LETTER = re.compile(r"[^\W\d_]")  # prose to translate has a letter (of any script)


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
    """Japanese of about `length_ratio` the source's length, line by line, in the source's Markdown
    shape: line markers (`#`, `-`/`*`/`+`, `1.`/`1)`, `>`) and table pipes stay, so do blank lines,
    fenced code blocks, keep_lines, lines without letters (`|---|`, placeholder lines) and every
    placeholder `⟦n⟧` or inline code span, with the prose around it translated. A twist drawn by
    faults.draw_twist replaces (untranslated) or damages (broken_code, commentary) the reply."""
    japanese, source = bank("japanese"), _source_text(ask)
    if ask.twist == "untranslated":
        return source
    keep = re.compile(japanese["keep_lines"])
    w = Writer(ask.rng, "japanese")
    out, fenced = [], False
    for line in source.split("\n"):
        fence = bool(_FENCE.match(line))
        fenced ^= fence
        if fenced or fence or keep.match(line):
            out.append(line)
            continue
        marker = _MARKER.match(line).group()
        pieces = _VERBATIM.split(line[len(marker) :])  # prose, kept span, prose, ...
        out.append(marker + "".join(
            p if i % 2 or not _LETTER.search(p) else _japanese(w, p, japanese["length_ratio"])
            for i, p in enumerate(pieces)
        ))
    text = "\n".join(out)
    if ask.twist == "broken_code":
        return _break_code(w, text)
    if ask.twist == "commentary":
        pre, note = w.pick(japanese["preambles"]), w.pick(japanese["notes"])
        return w.rng.choice([f"{pre}\n\n{text}", f"{text}\n\n{note}", f"{pre}\n\n{text}\n\n{note}"])
    return text


def has_code(ask: Ask) -> bool:
    """Whether a translation's source has code a translator could break: a placeholder or a fence."""
    source = _source_text(ask)
    return bool(_PLACEHOLDER.search(source) or _FENCE.search(source))


def _japanese(w: Writer, prose: str, ratio: float) -> str:
    """Japanese for one run of prose, its surrounding whitespace kept: sentences, or a short phrase
    for runs too short for one (headings, table cells, words between placeholders)."""
    lead, core, trail = re.fullmatch(r"(\s*)(.*?)(\s*)", prose, re.S).groups()
    chars = round(len(core) * ratio)
    japanese = w.sentences(chars) if chars >= 20 else w.pick(w.words["phrases"])
    return lead + japanese + trail


def _break_code(w: Writer, text: str) -> str:
    """One placeholder dropped, left unclosed (`⟦2`) or re-bracketed (`【2】`); with none, one fence
    line of a raw code block dropped or (half the time, if the first block has lines) one of its
    lines replaced by Japanese, as if the code had been translated."""
    spots = list(_PLACEHOLDER.finditer(text))
    if spots:
        spot = w.rng.choice(spots)
        broken = w.rng.choice(["", f"⟦{spot[1]}", f"【{spot[1]}】"])
        return text[: spot.start()] + broken + text[spot.end() :]
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if _FENCE.match(line)]
    code = range(fences[0] + 1, fences[1]) if len(fences) > 1 else range(0)
    if code and w.rng.random() < 0.5:
        lines[w.rng.choice(code)] = w.sentences(1)
    else:
        del lines[w.rng.choice(fences)]
    return "\n".join(lines)


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
