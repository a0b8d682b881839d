"""Protected spans: text a translation must carry over byte for byte, swapped for placeholders
`⟦n⟧` before the text goes to the model and restored afterwards (docs/translation.md).

The model sees `⟦0⟧`, `⟦1⟧` … where code, links, special tokens and label lines were, so it
cannot translate, reformat or "fix" them, and what comes back is checked for the placeholders
instead of for the spans. Classes, in the order they are taken (a later class never reaches into
an earlier one's span):
- **fenced code blocks**: from a line opening with ``` or ~~~ (any indentation) to the closing
  line of the same character at least as long, or to the end of the text when unclosed. The block
  includes its fence lines and the indentation of the first one, so the placeholder stands alone
  on its line and a model that drops the indentation cannot change it.
- **whole lines**: `Confidence: NN%` (UltraFeedback's honesty marker), and every line one of
  `Protect.extra_lines` matches from its start (add `$` to a regex to need the whole line).
- **inline**, leftmost first: code (`` `x` ``, ``` ``x`` ```, on one line), special tokens
  (`<|…|>`, `<s>`, `</s>`, `[INST]`, `[/INST]`, `<<SYS>>`, `<</SYS>>`), URLs (http, https, ftp,
  bare `www.`; trailing punctuation and an unbalanced `)` are left out), numbers with units when
  `Protect.units` is on (`5 kg`, `3.2GHz`, `10%`, `$40`), and any `⟦n⟧` or lone `⟦`/`⟧` already
  in the source, so that every bracket in the masked text is one of ours.

**Markdown structure** (`structure`) is a per-line signature of block markers, compared between
source and translation by the `structure` check: headings, bullets, numbered items, quotes, table
rows and rules keep their kind and number; a line that only holds a placeholder stays one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from itertools import count
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, field_validator

PLACEHOLDER = re.compile(r"⟦([0-9]+)⟧")
_BRACKET = re.compile(r"[⟦⟧]")

# Case-sensitive, so `mW` and `MW` stay apart; no English words that follow numbers in prose
# (`in`, `a`, `s`, `t`, `x`), which would mask "3 in the morning".
DEFAULT_UNITS = ("%", "‰", "°C", "°F", "°", "K", "km", "cm", "mm", "µm", "nm", "mi", "ft", "yd",
                 "kg", "mg", "µg", "lb", "lbs", "oz", "ml", "mL", "cl", "dl", "L", "gal",
                 "km/h", "mph", "m/s", "Hz", "kHz", "MHz", "GHz", "B", "KB", "kB", "MB", "GB", "TB",
                 "KiB", "MiB", "GiB", "TiB", "bps", "Mbps", "Gbps", "W", "kW", "MW", "kWh", "V",
                 "mV", "mA", "mAh", "J", "kJ", "cal", "kcal", "ms", "µs", "ns", "min", "hrs", "px",
                 "pt", "dpi")


class Protect(BaseModel):
    """Which spans `mask` protects. Units are off by default: converting or spelling out a
    quantity is often what a good translation does (`5 ft` in a Japanese text)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: bool = True
    urls: bool = True
    special_tokens: bool = True
    confidence: bool = True
    units: bool = False
    unit_symbols: tuple[str, ...] = DEFAULT_UNITS
    extra_lines: tuple[str, ...] = ()

    @field_validator("extra_lines")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for rx in patterns:
            try:
                re.compile(rx)
            except re.error as exc:
                raise ValueError(f"extra_lines: {rx!r} is not a regular expression ({exc})") from None
        return patterns


class Masked(BaseModel):
    """A text ready for the model: `text` with `⟦n⟧` standing for `spans[n]`.

    A piece of `text` (a segment) with the same `spans` is a valid Masked too: placeholders
    index the shared tuple, so segments are checked on their own and unmasked together."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    spans: tuple[str, ...] = ()


_FENCE_OPEN = re.compile(r"[ \t]*(`{3,}|~{3,})(.*)")
_CONFIDENCE = r"[ \t]*[*_]*confidence[*_]*[ \t]*:[ \t]*[*_]*[0-9]{1,3}(?:\.[0-9]+)?[ \t]*%[*_]*[ \t\r]*$"
_INLINE_CODE = r"(?<!`)(?P<ticks>`+)(?!`)[^\n]+?(?<!`)(?P=ticks)(?!`)"
_SPECIAL_TOKENS = r"<\|[^<>|\n]{1,64}\|>|<</?SYS>>|</?s>|\[/?INST\]"
# Parentheses inside a URL must balance (wiki links); it may not end in punctuation or emphasis.
_URL_CHAR = r"[^\s<>\"'`()\[\]⟦⟧]"
_URL_PAREN = r"\([^\s()<>⟦⟧]*\)"
_URLS = (rf"(?:\b(?:https?|ftp)://|(?<![\w.@/-])www\.)(?:{_URL_CHAR}|{_URL_PAREN})*"
         rf"(?:[^\s<>\"'`()\[\]⟦⟧.,;:!?*_~]|{_URL_PAREN})")
_NUMBER = r"[0-9]+(?:[.,][0-9]+)*"
_SOURCE_BRACKETS = r"⟦[0-9]+⟧|[⟦⟧]"


def _units(symbols: tuple[str, ...]) -> str:
    names = "|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True))
    return (rf"(?<![\w.,])(?:[$€£¥][ ]?{_NUMBER}|{_NUMBER}[ ]?(?:{names}))(?![\w])"
            if names else rf"(?<![\w.,])[$€£¥][ ]?{_NUMBER}(?![\w])")


def _lines_of(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line, the newline excluded."""
    spans, start = [], 0
    for line in text.split("\n"):
        spans.append((start, start + len(line)))
        start += len(line) + 1
    return spans


def _fences(text: str) -> list[tuple[int, int]]:
    blocks, lines, i = [], _lines_of(text), 0
    while i < len(lines):
        start, end = lines[i]
        m = _FENCE_OPEN.fullmatch(text, start, end)
        if not m or (m.group(1)[0] == "`" and "`" in m.group(2)):  # a backtick info string is inline code
            i += 1
            continue
        close = re.compile(rf"[ \t]*{re.escape(m.group(1)[0])}{{{len(m.group(1))},}}[ \t\r]*")
        j = next((k for k in range(i + 1, len(lines)) if close.fullmatch(text, *lines[k])), len(lines) - 1)
        blocks.append((start, lines[j][1]))
        i = j + 1
    return blocks


def _whole_lines(text: str, patterns: list[re.Pattern[str]]) -> list[tuple[int, int]]:
    return [(a, b) for a, b in _lines_of(text) if a < b and any(p.match(text, a, b) for p in patterns)]


def _inline(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    return [m.span() for m in pattern.finditer(text)]


def _stages(protect: Protect) -> list[Callable[[str], list[tuple[int, int]]]]:
    """Span finders, each run only on the text the ones before it left unprotected."""
    stages = []
    if protect.code:
        stages.append(_fences)
    lines = [re.compile(_CONFIDENCE, re.IGNORECASE)] if protect.confidence else []
    lines += [re.compile(rx) for rx in protect.extra_lines]
    if lines:
        stages.append(lambda text: _whole_lines(text, lines))
    inline = [_INLINE_CODE] if protect.code else []
    inline += [_SPECIAL_TOKENS] if protect.special_tokens else []
    inline += [_URLS] if protect.urls else []
    inline += [_units(protect.unit_symbols)] if protect.units else []
    inline.append(_SOURCE_BRACKETS)
    pattern = re.compile("|".join(f"(?:{rx})" for rx in inline))
    stages.append(lambda text: _inline(text, pattern))
    return stages


def mask(text: str, protect: Protect | None = None) -> Masked:
    """`text` with each protected span (see the module docstring) replaced by `⟦n⟧`, n counting
    from 0 in order of appearance."""
    # pieces: free text (str) and protected spans (1-tuples), in order
    pieces: list[str | tuple[str]] = [text]
    for find in _stages(protect or Protect()):
        refined: list[str | tuple[str]] = []
        for piece in pieces:
            if isinstance(piece, tuple):
                refined.append(piece)
                continue
            at = 0
            for a, b in find(piece):
                refined += [piece[at:a], (piece[a:b],)]
                at = b
            refined.append(piece[at:])
        pieces = refined
    numbers = count()
    masked = "".join(f"⟦{next(numbers)}⟧" if isinstance(p, tuple) else p for p in pieces)
    return Masked(text=masked, spans=tuple(p[0] for p in pieces if isinstance(p, tuple)))


def unmask(translated: str, masked: Masked) -> str:
    """`translated` with every `⟦n⟧` naming one of `masked.spans` restored. Never raises: a
    damaged placeholder stays as it is, and `span_damage` says what is wrong."""
    spans = masked.spans

    def restore(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return spans[n] if n < len(spans) else m.group()

    return PLACEHOLDER.sub(restore, translated)


def _line_placeholders(text: str) -> list[str]:
    """The placeholders that stand alone on their line (blocks and whole lines), in order."""
    return [line.strip() for line in text.split("\n") if PLACEHOLDER.fullmatch(line.strip())]


def span_damage(translated: str, masked: Masked) -> str | None:
    """What is wrong with the placeholders of `translated`, or None when each placeholder of
    `masked.text` is there exactly once, unaltered, and those alone on a line are in order.

    Placeholders inside a line may move: Japanese and other verb-final languages reorder the
    code and links of a sentence, and unmasking goes by number, not by position."""
    want = Counter(PLACEHOLDER.findall(masked.text))
    got = Counter(PLACEHOLDER.findall(translated))
    problems = []
    extra = got - want
    for label, found in (("missing", want - got), ("duplicated", [n for n in extra if n in want]),
                         ("unknown", [n for n in extra if n not in want])):
        if found:
            problems.append(label + " " + " ".join(f"⟦{n}⟧" for n in sorted(found, key=int)))
    stray = len(_BRACKET.findall(PLACEHOLDER.sub("", translated)))
    if stray:
        problems.append(f"{stray} stray bracket{'s' if stray > 1 else ''} (an altered placeholder)")
    if not problems and _line_placeholders(translated) != _line_placeholders(masked.text):
        problems.append("placeholder lines moved or reordered")
    return "; ".join(problems) or None


def placeholders_intact(translated: str, masked: Masked) -> bool:
    """Whether `span_damage` finds nothing."""
    return span_damage(translated, masked) is None


# -- Markdown structure ---------------------------------------------------------------------------

LineKind = Literal["blank", "heading", "bullet", "numbered", "quote", "table", "rule", "placeholder",
                   "text"]


class Mark(NamedTuple):
    """One line's block marker. `value`: heading level, item number, quote depth or table cells
    (0 otherwise). `nested`: indented by two or more columns. Which placeholder a placeholder
    line holds is `span_damage`'s concern."""

    kind: LineKind
    value: int = 0
    nested: bool = False


_HEADING = re.compile(r"(#{1,6})(?:[ \t]|$)")
_RULE = re.compile(r"(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,}")
_BULLET = re.compile(r"[-*+][ \t]")
_NUMBERED = re.compile(r"([0-9]{1,9})[.)](?:[ \t]|$)")
_QUOTE = re.compile(r"(?:>[ \t]?)+")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


def _mark(line: str) -> Mark:
    body = line.lstrip(" \t")
    nested = len(line[: len(line) - len(body)].expandtabs(4)) >= 2
    body = body.rstrip()
    if m := _HEADING.match(body):
        return Mark("heading", len(m.group(1)), nested)
    if _RULE.fullmatch(body):
        return Mark("rule", 0, nested)
    if _BULLET.match(body):
        return Mark("bullet", 0, nested)
    if m := _NUMBERED.match(body):
        return Mark("numbered", int(m.group(1)), nested)
    if m := _QUOTE.match(body):
        return Mark("quote", m.group().count(">"), nested)
    if body.startswith("|"):
        cells = _CELL_SPLIT.split(body.strip("|")) if body.strip("|") else []
        return Mark("table", len(cells), nested)
    if PLACEHOLDER.fullmatch(body):
        return Mark("placeholder", 0, nested)
    return Mark("text", 0, nested)


def structure(text: str) -> tuple[Mark, ...]:
    """The Markdown signature of `text`: a Mark per non-blank line, and one `blank` Mark per run
    of blank lines between two of them (leading and trailing blank lines do not count)."""
    marks: list[Mark] = []
    gap = False
    for line in text.split("\n"):
        if not line.strip():
            gap = bool(marks)
            continue
        if gap:
            marks.append(Mark("blank"))
            gap = False
        marks.append(_mark(line))
    return tuple(marks)
