"""Strict parsers for judge replies. Model output is data: they return errors, they never raise.

**Ratings** (one reply rating N texts). The reply must hold one block per text, each opened by a
header line `#### Output for Text k` (1 ≤ k ≤ N, any order, each once). Inside a block, fields
are lines that *start* with a known key: `Type:`, `Rationale:`, `Rating:`, `Rationale for
Rating:` (case-insensitive, optional markdown bold); other lines continue the field above. The
fields must come in the contract's order (`Rating, Rationale` or `Type, Rationale, Rating,
Rationale for Rating`), so a line `Rating: 5` quoted inside a rationale cannot stand in for a
missing rating of an untyped aspect.
- Each key at most once per block: a second `Rating:` line (say, a rationale quoting a
  completion that contains "Rating: 5") makes the block ambiguous, so it is an error, never a
  silent pick of the first or last one. Text that merely mentions "Rating: 5" mid-line is just
  rationale text.
- `Rating` is exactly one digit 1-5 (optionally `/5`), or `N/A` where the aspect allows it
  (honesty). Anything else ("excellent", "4 stars", "0", "6", extra lines) is an error.
- `Type` (truthfulness, helpfulness) is `None` or numbers 1-3; stored as a list of digit
  strings, with `None` as `["None"]` so the column has one type in Parquet/`datasets` (the
  published code's bare string "None" cannot share a column with lists).
- Untyped aspects need `Rating` and `Rationale`; a stray `Type:` there is ignored.
Output dicts have the released keys and order (docs/datasets.md#schema): `{Rating, Rationale}`
or `{Type, Rationale, Rating, Rationale For Rating}`, all strings. Per text: the dict or an error
naming the text and field; a block for a text that does not exist is a reply-level error.

**Critique** (`### Feedback` … `Overall Score: s`): exactly one `Overall Score:` line, last
non-empty line of the reply, `s` a number 1-10, optionally `/10`. The number is kept as written:
`1` stays 1.0 and `7/10` is 7.0 (the original's `score if score > 1 else 10*score` rescale turned
1 into 10, docs/datasets.md#overall-score-fix); `12` or `0` are errors, not clamped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HEADER = re.compile(r"^[ \t]*#{1,6}[ \t]*Output[ \t]+for[ \t]+Text[ \t]+(\d+)[ \t]*:?[ \t]*$",
                     re.IGNORECASE | re.MULTILINE)
_KEY = re.compile(r"^[ \t]*(?:[-*][ \t]+)?\**[ \t]*(Rationale[ \t]+for[ \t]+Rating|Rationale|Rating"
                  r"|Type)[ \t]*\**[ \t]*:[ \t]*\**[ \t]*(.*)$", re.IGNORECASE)
_RATING = re.compile(r"^([1-5])(?:[ \t]*/[ \t]*5)?\.?$")
_NA = re.compile(r"^N[ \t]*/[ \t]*A\.?$", re.IGNORECASE)
_TYPE_NONE = re.compile(r"^\[?[ \t]*[\"']?None[\"']?[ \t]*\]?\.?$", re.IGNORECASE)
_TYPE_TOKENS = re.compile(r"[\s,;\[\]\"']+|\band\b", re.IGNORECASE)
_SCORE_LINE = re.compile(r"^[ \t]*\**[ \t]*Overall[ \t]+Score[ \t]*\**[ \t]*:[ \t]*\**[ \t]*(.*?)"
                         r"[ \t]*\**[ \t]*$", re.IGNORECASE | re.MULTILINE)
_SCORE = re.compile(r"^(\d{1,2}(?:\.\d+)?)(?:[ \t]*/[ \t]*10)?\.?$")
_FEEDBACK_HEADER = re.compile(r"^\s*#{1,6}[ \t]*Feedback[ \t]*:?[ \t]*\n", re.IGNORECASE)

_CANON = {"type": "Type", "rationale": "Rationale", "rating": "Rating",
          "rationale for rating": "Rationale For Rating"}
TYPED_KEYS = ("Type", "Rationale", "Rating", "Rationale For Rating")
UNTYPED_KEYS = ("Rating", "Rationale")


@dataclass(frozen=True)
class RatingsParse:
    """Per text (index k-1 for `Text k`, in the order shown to the judge): dict or error."""

    annotations: list[dict | None]
    errors: list[str | None]
    reply_error: str | None = None

    @property
    def complete(self) -> bool:
        return self.reply_error is None and all(a is not None for a in self.annotations)

    @property
    def n_parsed(self) -> int:
        return sum(a is not None for a in self.annotations)


@dataclass(frozen=True)
class CritiqueParse:
    """A critique reply: the feedback and the overall score, or the error."""

    feedback: str | None
    score: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def complete(self) -> bool:
        """Same as `ok`; named like RatingsParse's so attempts of either kind rank alike."""
        return self.ok

    @property
    def n_parsed(self) -> int:
        return int(self.ok)


@dataclass
class _Block:
    fields: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


def _read_block(body: str) -> _Block:
    block = _Block()
    current: str | None = None
    for line in body.splitlines():
        m = _KEY.match(line)
        if m:
            name = _CANON[re.sub(r"[ \t]+", " ", m.group(1).lower())]
            if name in block.fields:
                block.error = block.error or f"more than one {name} line"
            block.fields[name] = [m.group(2)]
            current = name
        elif current is not None:
            block.fields[current].append(line)
        elif line.strip():
            block.error = block.error or "text before the first field"
    return block


def _value(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _rating(lines: list[str], allow_na: bool) -> str | tuple[str]:
    """The rating string, or a 1-tuple holding an error message."""
    value = _value(lines)
    if allow_na and _NA.match(value):
        return "N/A"
    m = _RATING.match(value)
    if m:
        return m.group(1)
    shown = value if len(value) <= 40 else value[:37] + "..."
    scale = "1 to 5 or N/A" if allow_na else "1 to 5"
    return (f"Rating {shown!r} is not a number from {scale}",)


def _types(lines: list[str]) -> list[str] | tuple[str]:
    value = _value(lines)
    if _TYPE_NONE.match(value):
        return ["None"]
    tokens = [t for t in _TYPE_TOKENS.split(value.rstrip(".")) if t]
    if tokens and all(t in ("1", "2", "3") for t in tokens):
        return list(dict.fromkeys(tokens))
    shown = value if len(value) <= 40 else value[:37] + "..."
    return (f"Type {shown!r} is not None or numbers from 1 to 3",)


def _annotation(block: _Block, typed: bool, allow_na: bool) -> dict | str:
    """The annotation of one block in the released shape (docs/datasets.md#schema), or an error."""
    if block.error:
        return block.error
    keys = TYPED_KEYS if typed else UNTYPED_KEYS
    missing = [k for k in keys if k not in block.fields]
    if missing:
        return "no " + " / ".join(missing) + " line"
    present = [k for k in block.fields if k in keys]
    if present != list(keys):
        return "fields out of order (" + ", ".join(present) + ")"
    out: dict = {}
    for key in keys:
        lines = block.fields[key]
        if key == "Rating":
            value = _rating(lines, allow_na)
        elif key == "Type":
            value = _types(lines)
        else:
            value = _value(lines) or (f"empty {key}",)
        if isinstance(value, tuple):
            return value[0]
        out[key] = value
    return out


def parse_ratings(text: str | None, n: int, *, typed: bool, allow_na: bool) -> RatingsParse:
    """Parse a reply rating `n` texts (see the module docstring for the accepted form)."""
    if not text or not text.strip():
        return RatingsParse([None] * n, ["empty reply"] * n, "empty reply")
    headers = list(_HEADER.finditer(text))
    if not headers:
        msg = "no '#### Output for Text k' blocks"
        return RatingsParse([None] * n, [msg] * n, msg)
    bodies: dict[int, list[str]] = {}
    reply_error = None
    for i, h in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        k = int(h.group(1))
        if not 1 <= k <= n:
            reply_error = f"block for Text {k}, but only {n} texts were given"
            continue
        bodies.setdefault(k, []).append(text[h.end(): end])
    annotations: list[dict | None] = []
    errors: list[str | None] = []
    for k in range(1, n + 1):
        found = bodies.get(k, [])
        if len(found) != 1:
            annotations.append(None)
            errors.append(f"Text {k}: " + ("no block" if not found else "more than one block"))
            continue
        result = _annotation(_read_block(found[0]), typed, allow_na)
        if isinstance(result, str):
            annotations.append(None)
            errors.append(f"Text {k}: {result}")
        else:
            annotations.append(result)
            errors.append(None)
    return RatingsParse(annotations, errors, reply_error)


def parse_critique(text: str | None) -> CritiqueParse:
    """Parse a teacher-feedback reply into (feedback, overall score 1-10)."""
    if not text or not text.strip():
        return CritiqueParse(None, None, "empty reply")
    lines = list(_SCORE_LINE.finditer(text))
    if not lines:
        return CritiqueParse(None, None, "no 'Overall Score:' line")
    if len(lines) > 1:
        return CritiqueParse(None, None, "more than one 'Overall Score:' line")
    m = lines[0]
    if text[m.end():].strip():
        return CritiqueParse(None, None, "text after the 'Overall Score:' line")
    raw = m.group(1).strip()
    sm = _SCORE.match(raw)
    if not sm:
        return CritiqueParse(None, None, f"Overall Score {raw[:40]!r} is not a number from 1 to 10")
    score = float(sm.group(1))
    if not 1 <= score <= 10:
        return CritiqueParse(None, None, f"Overall Score {raw!r} is outside 1 to 10")
    feedback = _FEEDBACK_HEADER.sub("", text[: m.start()], count=1).strip()
    if not feedback:
        return CritiqueParse(None, score, "empty feedback")
    return CritiqueParse(feedback, score)
