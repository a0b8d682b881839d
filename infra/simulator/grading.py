"""Judge rating blocks and critique feedback, well-formed or deliberately malformed.

The well-formed output is the contract the project's judge parser expects:

    #### Output for Text 1          #### Output for Text 1
    Type: 1, 3                      Rating: 4
    Rationale: ...                  Rationale: ...
    Rating: 4
    Rationale for Rating: ...

(typed aspects on the left, when the prompt contains `Type:`), one block per `<text N>`,
blocks separated by a blank line; and for critiques `### Feedback\\n...\\nOverall Score: 7`.
"""

from __future__ import annotations

import random
import re

from infra.simulator.prose import Writer, bank, content_words
from infra.simulator.routes import Ask

MALFORMABLE = frozenset({"judge", "critique"})

_TEXT_TAG = re.compile(r"<text (\d+)>")


def _band(value: int | None, high: int, mid: int) -> str:
    if value is None:
        return "mid"
    return "high" if value >= high else "mid" if value >= mid else "low"


def _sentences(w: Writer, templates: list[str], count: int, **extra: object) -> str:
    """`count` sentences from distinct templates."""
    chosen = w.rng.sample(templates, min(count, len(templates)))
    return " ".join(w.fill(t, **extra) for t in chosen)


def judge(ask: Ask) -> str:
    """One rating block per `<text N>` of the last user message."""
    prompt, rng = ask.prompt, ask.rng
    g = bank("grading")
    w = Writer(rng, topics=content_words(prompt.last_user))
    texts = max(int(n) for n in _TEXT_TAG.findall(prompt.last_user))
    typed, allow_na = "Type:" in prompt.text, "N/A" in prompt.text
    blocks = []
    for n in range(1, texts + 1):
        rating = None if allow_na and rng.random() < g["na_rate"] else _weighted(rng, "rating")
        band = _band(rating, 4, 3)
        lines = [f"#### Output for Text {n}"]
        rationale = f"Rationale: {_sentences(w, g['rationale'][band], rng.randint(1, 2), n=n)}"
        rating_line = f"Rating: {'N/A' if rating is None else rating}"
        if typed:
            lines += [f"Type: {_types(rng, g)}", rationale, rating_line]
            lines.append(f"Rationale for Rating: {w.pick(g['rating_rationale'][band])}")
        else:
            lines += [rating_line, rationale]
        blocks.append(lines)
    if ask.twist == "malformed":
        _malform_judge(blocks, rng, w)
    return "\n\n".join("\n".join(lines) for lines in blocks)


def critique(ask: Ask) -> str:
    """Teacher feedback and an `Overall Score:` line, 1..10 (sometimes written `7/10`)."""
    prompt, rng = ask.prompt, ask.rng
    g = bank("grading")
    w = Writer(rng, topics=content_words(prompt.last_user))
    score = _weighted(rng, "score")
    feedback = _sentences(w, g["feedback"][_band(score, 8, 5)], rng.randint(2, 4))
    shown = f"{score}/10" if rng.random() < g["slash_score_rate"] else str(score)
    if ask.twist == "malformed":
        variant = rng.choice(["bad_score", "no_score", "prose"])
        if variant == "no_score":
            return f"### Feedback\n{feedback}"
        if variant == "prose":
            return w.pick(g["prose"])
        shown = rng.choice(g["bad_scores"])
    return f"### Feedback\n{feedback}\nOverall Score: {shown}"


def _weighted(rng: random.Random, name: str) -> int:
    weights = bank("grading")[f"{name}_weights"]
    return rng.choices(range(1, len(weights) + 1), weights)[0]


def _types(rng: random.Random, g: dict) -> str:
    if rng.random() < g["none_type_rate"]:
        return "None"
    return ", ".join(str(t) for t in sorted(rng.sample([1, 2, 3], rng.randint(1, 3))))


def _malform_judge(blocks: list[list[str]], rng: random.Random, w: Writer) -> None:
    """Break the blocks in place, the ways real judges do."""
    g = bank("grading")
    variant = rng.choice(["missing_block", "bad_rating", "missing_rating", "prose"])
    victim = rng.randrange(len(blocks))
    rating_at = next(i for i, line in enumerate(blocks[victim]) if line.startswith("Rating:"))
    if variant == "missing_block" and len(blocks) > 1:
        del blocks[victim]
    elif variant == "missing_rating":
        del blocks[victim][rating_at]
    elif variant == "prose":
        blocks[:] = [[w.pick(g["prose"])]]
    else:
        blocks[victim][rating_at] = f"Rating: {rng.choice(g['bad_ratings'])}"
