"""Segments: a text cut into pieces small enough for one translation call, and put back together.

`split` works on the masked text (tasks/core/translate/spans.py), so a code block is one
placeholder and never cut, and returns the text as a list of two kinds of pieces that
`"".join` restores byte for byte:
- **chunks**, with no whitespace at either end: the pieces to translate. Consecutive paragraphs
  are packed greedily while the chunk stays within `max_tokens` (tasks/core/tokens.py); a paragraph
  over the limit is cut at line breaks, a line over it at sentence ends. A single sentence over
  the limit stays whole: half a sentence cannot be translated into a language that orders it
  differently, so a chunk exceeds `max_tokens` only then.
- **separators**, whitespace only: the blank lines, line breaks and spaces between chunks, and
  any whitespace around the text. They are copied, not translated, so the model can neither
  lose nor add paragraph breaks between chunks, and a blank text costs no call.

The flow translates each chunk, strips the reply's outer whitespace, joins, and unmasks once.
"""

from __future__ import annotations

import re

from tasks.core.tokens import estimate_tokens

_WHITESPACE = re.compile(r"\s+")
_OUTER = re.compile(r"(\s*)(.*?)(\s*)", re.DOTALL)
# What ends a sentence: terminal punctuation, then closing quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]」』]{0,3}$")


def _paragraph_break(body: str, m: re.Match[str]) -> bool:
    return m.group().count("\n") >= 2


def _line_break(body: str, m: re.Match[str]) -> bool:
    return "\n" in m.group()


def _sentence_break(body: str, m: re.Match[str]) -> bool:
    """A space after a sentence end and before a word that does not start lowercase
    ("e.g. apples" is one sentence)."""
    ended = _SENTENCE_END.search(body, max(0, m.start() - 4), m.start())
    return bool(ended) and not body[m.end()].islower()


_BREAKS = (_paragraph_break, _line_break, _sentence_break)


def is_chunk(piece: str) -> bool:
    """Whether a piece of `split`'s output is to be translated (it is not whitespace only)."""
    return bool(piece) and not piece.isspace()


def split(text: str, max_tokens: int) -> list[str]:
    """`text` as chunks and separators (see the module docstring); `join` undoes it."""
    lead, body, trail = _OUTER.fullmatch(text).groups()
    return [p for p in (lead, *(_pack(body, max_tokens, 0) if body else ()), trail) if p]


def join(pieces: list[str]) -> str:
    """The text `pieces` came from (with translated chunks: the translation)."""
    return "".join(pieces)


def _pack(body: str, max_tokens: int, level: int) -> list[str]:
    """`body` (no outer whitespace) within `max_tokens` per chunk, cutting at the `level`th
    kind of break and going finer for a piece that is still too long."""
    if estimate_tokens(body) <= max_tokens or level == len(_BREAKS):
        return [body]
    cuts = [m.span() for m in _WHITESPACE.finditer(body) if _BREAKS[level](body, m)]
    if not cuts:
        return _pack(body, max_tokens, level + 1)
    # piece i runs from starts[i] to ends[i]; separators lie between
    starts = [0, *(b for _, b in cuts)]
    ends = [*(a for a, _ in cuts), len(body)]
    out: list[str] = []
    first = 0
    for i in range(1, len(starts) + 1):
        if i < len(starts) and estimate_tokens(body[starts[first]:ends[i]]) <= max_tokens:
            continue
        chunk = body[starts[first]:ends[i - 1]]
        out += _pack(chunk, max_tokens, level + 1) if i - 1 == first else [chunk]
        if i < len(starts):
            out.append(body[ends[i - 1]:starts[i]])
        first = i
    return out
