"""Text helpers for openings: normalisation for dedup and parsing of numbered lists from model output."""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
_ITEM = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*•])\s+(.*\S)\s*$")
_WRAP = re.compile(r'^(?:\*\*|__|["“”\'`])+|(?:\*\*|__|["“”\'`])+$')


def normalize(text: str) -> str:
    """Lower case, NFKC, punctuation removed, whitespace collapsed: equal for trivially equal texts."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def shingles(text: str, n: int) -> set[str]:
    """Word n-grams of the normalised text (the whole text when shorter than n words)."""
    words = normalize(text).split()
    if len(words) <= n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def parse_numbered_list(text: str, limit: int | None = None) -> list[str]:
    """Items of a numbered or bulleted list in model output, in order, cleaned of markup.

    Lines that are not list items (a preamble such as "Here are five topics:") are ignored; an
    item's continuation lines are not joined (generation prompts ask for one line per item).
    """
    items: list[str] = []
    for line in text.splitlines():
        m = _ITEM.match(line)
        if not m:
            continue
        item = _WRAP.sub("", m.group(1).strip()).strip()
        item = item.replace("**", "").strip()
        if item:
            items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items


def cut_at_sentence(text: str, max_chars: int) -> str:
    """`text` if short enough, else its longest prefix ending at a sentence end within max_chars."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]]?(?=\s)", head)]
    return head[:ends[-1]].strip() if ends else head.rsplit(" ", 1)[0].strip()
