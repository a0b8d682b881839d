"""Seeded prose from the word banks and sentence templates in templates/*.yaml.

Every choice comes from the caller's `random.Random`, so equal seeds give equal text. Templates
hold `{slot}` placeholders (see templates/english.yaml); a capitalised slot capitalises the word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import yaml

TEMPLATES = Path(__file__).with_name("templates")

_SLOT = re.compile(r"\{(\w+)\}")
_QUOTED = re.compile(r'["“]([^"”\n]{3,60})["”]')
_FIRST_SENTENCE = re.compile(r"(?<=[.?!])\s+|\n")
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeioAEIO])")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")


@cache
def bank(name: str) -> dict:
    """A templates/<name>.yaml file, parsed once."""
    return yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text(encoding="utf-8"))


def plural(noun: str) -> str:
    """English plural, good enough for the word banks."""
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def topics(text: str, limit: int = 6) -> list[str]:
    """What a prompt is about: its quoted phrases if it has any, else the content words of its
    first sentence, else those of the whole text."""
    quoted = [_lower_first(q.strip()) for q in _QUOTED.findall(text)]
    if quoted:
        return list(dict.fromkeys(quoted))[:limit]
    first = _FIRST_SENTENCE.split(text.strip(), maxsplit=1)[0]
    return content_words(first, limit) or content_words(text, limit)


def _lower_first(phrase: str) -> str:
    """ "Solar power" → "solar power"; names ("Marie Curie", "Paris") stay as they are."""
    words = phrase.split()
    if len(words) > 1 and words[0][:1].isupper() and all(w.islower() for w in words[1:]):
        return phrase[0].lower() + phrase[1:]
    return phrase


def content_words(text: str, limit: int = 12) -> list[str]:
    """Distinct content phrases of `text` in order: runs of up to three adjacent non-stopwords
    ("renewable energy"), lowercased unless capitalised mid-sentence."""
    stop = _stopwords()
    out: list[str] = []
    phrase: list[str] = []
    end = -1
    for m in _WORD.finditer(text):
        if len(out) >= limit:
            break
        word = m.group().strip("'-")
        if word.lower() in stop or len(word) < 4:
            _flush(phrase, out)
            continue
        before = text[max(0, m.start() - 4) : m.start()].rstrip(" \t")
        if not before or before[-1] in ".!?:\n" or not word[0].isupper():
            word = word.lower()
        if not (phrase and len(phrase) < 3 and text[end : m.start()] == " "):
            _flush(phrase, out)
        phrase.append(word)
        end = m.end()
    _flush(phrase, out)
    return out[:limit]


def _flush(phrase: list[str], out: list[str]) -> None:
    if phrase and (joined := " ".join(phrase)) not in out:
        out.append(joined)
    phrase.clear()


@cache
def _stopwords() -> frozenset[str]:
    return frozenset(bank("english")["stopwords"])


class Writer:
    """Fills templates from one language's word banks; `topics` feed `{topic}` and `{word}`."""

    def __init__(self, rng: random.Random, lang: str = "english", topics: Iterable[str] = ()):
        self.rng = rng
        self.words = bank(lang)
        self.topics = list(topics)

    def fill(self, template: str, **extra: object) -> str:
        """Replace each slot with a fresh draw, avoiding repeats within the template."""
        used: set[str] = set()

        def slot(m: re.Match) -> str:
            name = m.group(1)
            word = str(extra[name]) if name in extra else self._draw(name.lower(), used)
            used.add(word)
            return word[:1].upper() + word[1:] if name[0].isupper() else word

        return _ARTICLE.sub(r"\1n ", _SLOT.sub(slot, template))

    def pick(self, templates: list[str], **extra: object) -> str:
        """One template chosen by the rng, filled."""
        return self.fill(self.rng.choice(templates), **extra)

    def sentences(self, chars: int, templates: list[str] | None = None, fit: bool = False) -> str:
        """One paragraph: a first sentence, then more until about `chars` characters (with
        `fit`, only while the next sentence keeps the paragraph within `chars`)."""
        templates = templates or self.words["sentences"]
        joiner = self.words["joiner"]
        out = [self.pick(templates)]
        size = len(out[0])
        while size < chars:
            sentence = self.pick(templates)
            size += len(joiner) + len(sentence)
            if fit and size > chars:
                break
            out.append(sentence)
        return joiner.join(out)

    def prose(self, chars: int) -> str:
        """Paragraphs of 200-500 characters, at most `chars` in all (but at least one sentence)."""
        paragraphs: list[str] = []
        left = chars
        while left > 0:
            paragraph = self.sentences(min(left, self.rng.randint(200, 500)), fit=True)
            if paragraphs and len(paragraph) > left:
                break
            paragraphs.append(paragraph)
            left -= len(paragraph) + 2
        return "\n\n".join(paragraphs)

    def _draw(self, name: str, used: set[str]) -> str:
        if name in ("topic", "word") and self.topics:
            choices = self.topics
        elif name in ("topic", "word", "nouns"):
            choices = self.words["noun"]
        else:
            choices = self.words[name]
        for _ in range(4):
            word = self.rng.choice(choices)
            word = plural(word) if name == "nouns" else word
            if word not in used:
                break
        return word
