"""Parsers for judge replies. Model output is data: they return errors, never raise, and never
guess: every presentation whose value is unambiguous is read, the rest is refused.

**Ratings** (one reply rating N texts on one aspect; line endings normalised).
- Blocks. A header is a line on its own naming one text: `#### Output for Text k`, `**Output for
  Text k**`, `Output for Text k:`, `### Text k`, `**Text k:**`, `Text k`, `<text k>` (any `#`
  level, bold, list marker, colon; a `#` or bold header may add a digit-free title). A preamble
  before the first header and headers whose block holds no field (an echoed input, a ranking) are
  ignored. Each text 1..N needs one block with fields, in any order; two for one text are an error,
  a block for a text that does not exist is a reply-level error.
- Fields are lines starting (after a bullet, `#`, bold) with `Type:`, `Rationale:`, `Rating:` (or
  `Score:`, `<Aspect> Rating:`, `Rating (1-5):`), `Rationale for Rating:` (or `Rating Rationale:`);
  other lines continue the field above. Rule lines are dropped, and so is a trailer after the last
  field that starts at a rule, heading or bold-only line. Errors: a key twice in a block (a quoted
  `Rating: 5` line), text before the first field, fields out of the contract's order (`Rating,
  Rationale` / `Type, Rationale, Rating, Rationale for Rating`): so a `Rating: 5` quoted inside an
  untyped rationale cannot stand in for a missing rating. In typed aspects a `Rationale:` after the
  Rating is the rating rationale (the original UltraFeedback layout); a rating quoted inside a typed
  rationale is still refused, because the rating field must then be one line.
- Rating: one digit 1-5, alone in its field, decorated or labelled (`**4**`, `[4]`, `4/5`, `4 out
  of 5`, `4.0`, `4 (Almost There)`, `4 - Almost there`, `4 stars`); `N/A` (`N/A (creative
  writing)`) where allowed. Refused: a second number (`3-4`, `3.5`, `4/10`, `4 (maybe 5)`), `3 or
  higher`-style hedges, `?`, `+`, `0`, `6`, words.
- Type: `None` (a digit-free label may follow, not `but`/`except`), or codes 1-3 as `1, 3`, `1 and
  3`, `[1, 3]`, `1 (Factual Error), 3 (Self-Contradictory)`, `1 - Factual Error; 3 - Logical
  Error`, `2 - Contradictory with instruction`, one code per line. Refused: `1/3`, `1-3`, other
  numbers, free text between codes, a label naming a code not listed (`1 (Self-Contradictory)`).
  Names alone (`Factual Error, Logical Error`) only when `aspect` is given and the value is nothing
  but that aspect's category names. Stored as distinct digit strings in written order, `None` as
  `["None"]` so the column has one type in Parquet/`datasets` (the published code's bare string).
- Untyped aspects need Rating and Rationale (`Rationale for Rating` stands for it); a stray `Type:`
  is ignored. Output dicts have the released keys and order (docs/datasets.md#schema): `{Rating,
  Rationale}` or `{Type, Rationale, Rating, Rationale For Rating}`. Per text: dict or error.

**Critique** (`### Feedback` … `Overall Score: s`). A line starting with `Overall Score` (bold,
`#`, bullet; then `:`, `=`, ` - ` or a space) holds `s`, 1-10, optionally `/10` or `(out) of 10`,
then an optional digit-free label or sentence (`7. Could be more concise.`); `s` may stand on the
next line. Without such a line, a last line `Score:`, `Final Score:` or `Overall Rating:` is the
score. All score lines must agree; text after the last one is dropped but may hold no number or
score word (it could revise the score). The feedback is the text before it (or after it, if
nothing precedes), less a leading `Feedback` header. The number is kept as written: `1` stays 1.0,
`7/10` is 7.0, `8.5` is 8.5 (the original's `score if score > 1 else 10*score` turned 1 into 10,
docs/datasets.md#overall-score-fix). Refused: `0`, `11`, other scales (`4/5`, `70/100`), ranges,
words, disagreeing score lines, no score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TYPED_KEYS = ("Type", "Rationale", "Rating", "Rationale For Rating")
UNTYPED_KEYS = ("Rating", "Rationale")

_EMPHASIS = re.compile(r"\*+|__+|`+")
_RULE = re.compile(r"\s*(?:-{3,}|\*{3,}|_{3,}|={3,})\s*")
# Markdown prefixes of a header line: a `#` heading mark, then a list marker.
_MARKS = re.compile(r"\s*(#{1,6}\s*)?((?:[-+•]|\*(?=\s)|\d{1,2}[.)])\s+)?")
_HEADER = re.compile(r"(?:(?:output|evaluation|assessment|annotation|rating|review)s?\s+(?:for|of)\s+)?"
                     r"(?:the\s+)?text\s*#?\s*(\d+)(?!\d)(?P<title>\D*)", re.IGNORECASE)
_ANGLE_HEADER = re.compile(r"<\s*text\s+(\d+)\s*>\s*:?", re.IGNORECASE)
# Where a block's trailer may start: a rule, a heading, a line that is all bold.
_TRAILER = re.compile(rf"{_RULE.pattern}|\s*(?:#{{1,6}}\s.*|(\*\*|__)[^*_]+\1\s*:?)\s*")
_KEY = re.compile(
    r"\s*(?:#{1,6}\s*)?(?:(?:[-+•]|\*(?=\s))\s+)?[*_]*\s*"
    r"(?P<key>rationale\s+for\s+(?:the\s+)?rating|rating\s+rationale|rationale"
    r"|(?:(?:final|overall|instruction[\s-]following|honesty|truthfulness|helpfulness)\s+)?rating"
    r"|score|(?:hallucination\s+)?types?)"
    r"\s*(?:\([^()\n]*\))?\s*[*_]*\s*:\s*[*_]*\s*(?P<value>.*)", re.IGNORECASE)


def _out_of(top: int) -> str:
    """The scale written after a value: `/5`, `of 5`, `out of 5`."""
    return rf"(?:/|(?:out\s+)?of)\s*{top}(?!\d)"


def _scale_mention(top: int) -> re.Pattern:
    """The scale named in a label: `(out of 5)`, `on a scale of 1 to 5`, `1-5 scale`."""
    return re.compile(rf"\(?\s*(?:{_out_of(top)}|(?:on\s+a\s+)?(?:scale\s+of\s+)?1\s*(?:-|–|to)\s*{top}"
                      rf"(?!\d)(?:\s+scale)?)\s*\)?", re.IGNORECASE)


# The whitespace before a label stays in the tail: `4 stars` is labelled, `4stars` is not.
_RATING = re.compile(rf"[\[(]?\s*(?:(?P<na>n\s*/\s*a|n\.a\.|na|not\s+applicable)(?![a-z])"
                     rf"|(?P<n>\d+(?:\.\d+)?))(?:\s*{_out_of(5)})?(?:\s*[\])])?(?P<tail>.*)", re.IGNORECASE)
_SCALE_5 = _scale_mention(5)
# A label after a value may not name a second value, a range (or end like a cut one, `4-`) or a
# hedge towards another value.
_BAD_LABEL = re.compile(r"\d|[?+]|\b(?:or|to)\s+(?:higher|lower|above|below|better|worse|more|less)\b"
                        r"|\bhalf\b|\bn\s*/\s*a\b|\bnot\s+applicable\b|[-–—]\s*$", re.IGNORECASE)
_LABEL_START = " \t.,;:-–—("

_TYPE_NONE = re.compile(r"[\s\[(\"']*none\b(?P<tail>.*)", re.IGNORECASE)
_NONE_EXCEPT = re.compile(r"\b(?:but|except|however|although|apart\s+from|other\s+than)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_FILLER = re.compile(r"[\s,;/()\[\].:\-–—'\"•+]*(?:(?:and|types?)\b[\s,;/()\[\].:\-–—'\"•+]*)*",
                     re.IGNORECASE)
# Between two codes: whitespace, or a separator with brackets and quotes around it (`1 3`,
# `1, 3`, `1 and 3`, `"1", "3"`, `(1), (3)`); optionally after a bracketed label.
_SEP = r"(?:\s+|[\s\])'\"]*(?:,|;|\band\b)(?:\s*\band\b)?[\s\[('\"]*)"
_GAP_BARE = re.compile(_SEP, re.IGNORECASE)
_GAP_PAREN = re.compile(rf"\s*\((?:[^()]|\([^()]*\))*\){_SEP}", re.IGNORECASE)
_GAP_LABEL = re.compile(r"\s*[-–—:.]\s*(?P<label>.*?)\s*(?:,|;|\band\b)(?:\s*\band\b)?[\s\[('\"]*",
                        re.IGNORECASE)
_TAIL_HEDGE = re.compile(r"[\s,;]*(?:or|and|maybe|possibly|perhaps)\b|.*\bnone\b", re.IGNORECASE)

# Category names of the typed aspects (ours and the original's wording), by code.
_WORLD = r"(?:contradictory\s+with|contradicts|conflicts?\s+with|contradiction\s+with)\s+(?:the\s+)?"
_TYPE_NAMES = {
    "truthfulness": {
        "1": rf"factual\s+errors?|{_WORLD}world(?:\s+knowledge)?|against\s+the\s+facts",
        "2": rf"{_WORLD}instructions?(?:\s+and\s+(?:the\s+)?input)?|against\s+the\s+instructions?",
        "3": r"self[\s-]*contradict(?:ory|ion)|logical\s+errors?|against\s+itself",
    },
    "helpfulness": {
        "1": r"clarity\s+and\s+relevance|on\s+target",
        "2": r"useful\s+and\s+comprehensive(?:\s+information)?|comprehensive\s+information|substance",
        "3": r"not\s+lengthy(?:\s*,?\s*(?:and\s+)?no\s+repetition)?|no\s+repetition|conciseness|economy",
    },
}
_NAME_PATTERNS = {aspect: re.compile("|".join(rf"(?P<c{code}>\b(?:{rx})\b)" for code, rx in names.items()),
                                     re.IGNORECASE)
                  for aspect, names in _TYPE_NAMES.items()}

_SCORE_KEY = re.compile(
    r"\s*(?:#{1,6}\s*)?(?:(?:[-+•]|\*(?=\s))\s+)?[*_]*\s*"
    r"(?P<key>overall\s+(?:quality\s+)?score|final\s+score|overall\s+rating|score)"
    r"\s*(?:\([^()\n]*\))?\s*[*_]*\s*(?::|=|[-–—](?=\s)|(?=\s+[*_]*\d)|(?=[\s*_]*$))\s*[*_]*\s*"
    r"(?P<value>.*)", re.IGNORECASE)
_SCORE = re.compile(rf"[\[(]?\s*(?P<n>\d+(?:\.\d+)?)(?:\s*{_out_of(10)})?(?:\s*[\])])?(?P<tail>.*)",
                    re.IGNORECASE)
_SCALE_10 = _scale_mention(10)
_FEEDBACK_HEADER = re.compile(r"\A\s*(?:#{1,6}[ \t]*)?[*_]*[ \t]*feedback[ \t]*[*_]*[ \t]*"
                              r"(?::[ \t]*[*_]*|(?=\n|$))", re.IGNORECASE)
# Text after the score line may not bring in a number or another score (`...I'd lower it to 5`).
_AFTER_SCORE = re.compile(r"\d|\b(?:scor|rat(?:e|ing)|grad(?:e|ing))\w*", re.IGNORECASE)
_TRAILING_RULES = re.compile(r"(?:\n[ \t]*(?:-{3,}|\*{3,}|_{3,})[ \t]*)+$")


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


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ").split("\n")


def _plain(value: str) -> str:
    return _EMPHASIS.sub("", value).strip()


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:37] + "..."


def _header(line: str) -> int | None:
    """The text number a header line names, or None."""
    marks = _MARKS.match(line)
    rest = line[marks.end():].strip()
    bold = len(rest) > 4 and rest.startswith(("**", "__")) and rest.rstrip(" :").endswith(("**", "__"))
    rest = _plain(rest)
    if m := _ANGLE_HEADER.fullmatch(rest):
        return int(m.group(1))
    m = _HEADER.fullmatch(rest)
    if not m or (m.group("title").strip(" \t:.") and not (marks.group(1) or bold)):
        return None
    return int(m.group(1))


def _canon(key: str, typed: bool, seen: dict) -> str:
    """The released key a field line stands for, given the fields already seen in its block."""
    key = " ".join(key.lower().split())
    if key.startswith("rationale for") or key == "rating rationale":
        return "Rationale For Rating" if typed else "Rationale"
    if key == "rationale":
        # original layout: the Rationale after a typed aspect's Rating explains the rating
        return "Rationale For Rating" if typed and "Rating" in seen else "Rationale"
    if key.endswith(("type", "types")):
        return "Type"
    return "Rating"


def _read_block(lines: list[str], typed: bool) -> _Block:
    keyed = [_KEY.fullmatch(line) for line in lines]
    last = max((i for i, m in enumerate(keyed) if m), default=-1)
    end = next((i for i in range(last + 1, len(lines)) if _TRAILER.fullmatch(lines[i])), len(lines))
    block = _Block()
    current: str | None = None
    for line, m in zip(lines[:end], keyed[:end], strict=True):
        if _RULE.fullmatch(line):
            continue
        if m:
            name = _canon(m.group("key"), typed, block.fields)
            if name in block.fields:
                block.error = block.error or f"more than one {name} line"
            block.fields[name] = [m.group("value")]
            current = name
        elif current is not None:
            block.fields[current].append(line)
        elif line.strip():
            block.error = block.error or "text before the first field"
    return block


def _value(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _label_ok(tail: str, scale: re.Pattern) -> bool:
    """Whether the text after a value is only a label: no second value, range or hedge."""
    return not tail or (tail[0] in _LABEL_START and not _BAD_LABEL.search(scale.sub(" ", tail)))


def _rating(lines: list[str], allow_na: bool) -> str | tuple[str]:
    """The rating string, or a 1-tuple holding an error message."""
    shown = [line for line in lines if line.strip()]
    value = _plain(shown[0]) if len(shown) == 1 else ""
    m = _RATING.fullmatch(value)
    if m and _label_ok(m.group("tail"), _SCALE_5):
        if m.group("na") and allow_na:
            return "N/A"
        if m.group("n") and re.fullmatch(r"[1-5](?:\.0+)?", m.group("n")):
            return m.group("n")[0]
    scale = "1 to 5 or N/A" if allow_na else "1 to 5"
    return (f"Rating {_shown(_value(lines))!r} is not a number from {scale}",)


def _names(text: str, aspect: str) -> list[str] | None:
    """The codes `text` names if it is nothing but `aspect`'s category names and list filler."""
    pattern = _NAME_PATTERNS[aspect]
    codes = [m.lastgroup[1:] for m in pattern.finditer(text)]
    return codes if codes and _FILLER.fullmatch(pattern.sub(" ", text)) else None


def _named_elsewhere(text: str, codes: list[str], aspect: str | None) -> bool:
    """Whether a label in `text` names a category whose code is not in `codes`."""
    return any(m.lastgroup[1:] not in codes for name, pattern in _NAME_PATTERNS.items()
               if aspect in (None, name) for m in pattern.finditer(text))


def _gap_ok(gap: str, aspect: str | None) -> bool:
    """Whether the text between two codes only separates them (with a bracketed or name label)."""
    if _GAP_BARE.fullmatch(gap) or _GAP_PAREN.fullmatch(gap):
        return True
    m = _GAP_LABEL.fullmatch(gap)
    aspects = [aspect] if aspect else list(_NAME_PATTERNS)
    return bool(m) and any(_names(m.group("label"), a) for a in aspects)


def _codes(line: str, aspect: str | None) -> list[str] | None:
    """The codes of one line of a Type value, or None when the line is not a plain code list."""
    numbers = list(_NUMBER.finditer(line))
    if not numbers or any(n.group() not in ("1", "2", "3") for n in numbers):
        return None
    if any(line[n.start() - 1: n.start()].isalnum() or line[n.end(): n.end() + 1].isalnum()
           for n in numbers):
        return None
    bounds = [0, *[x for n in numbers for x in n.span()], len(line)]
    pieces = [line[bounds[i]:bounds[i + 1]] for i in range(0, len(bounds), 2)]
    prefix, gaps, tail = pieces[0], pieces[1:-1], pieces[-1]
    if not _FILLER.fullmatch(prefix) or not all(_gap_ok(g, aspect) for g in gaps):
        return None
    if _TAIL_HEDGE.match(tail):
        return None
    return [n.group() for n in numbers]


def _types(lines: list[str], aspect: str | None) -> list[str] | tuple[str]:
    value = _value(lines)
    rows = [_plain(line.replace("&", " and ")) for line in lines if line.strip()]
    error = (f"Type {_shown(value)!r} is not None or numbers from 1 to 3",)
    if not rows:
        return error
    none = _TYPE_NONE.fullmatch(rows[0])
    if none:
        tail = none.group("tail")
        if len(rows) == 1 and not re.search(r"\d", tail) and not _NONE_EXCEPT.search(tail):
            return ["None"]
        return error
    text = "\n".join(rows)
    if not re.search(r"\d", text):
        found = _names(text, aspect) if aspect in _NAME_PATTERNS else None
        return list(dict.fromkeys(found)) if found else error
    codes: list[str] = []
    for row in rows:
        found = _codes(row, aspect)
        if found is None:
            return error
        codes += found
    if _named_elsewhere(text, codes, aspect):
        return error
    return list(dict.fromkeys(codes))


def _annotation(block: _Block, typed: bool, allow_na: bool, aspect: str | None) -> dict | str:
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
            value = _types(lines, aspect)
        else:
            value = _value(lines) or (f"empty {key}",)
        if isinstance(value, tuple):
            return value[0]
        out[key] = value
    return out


def parse_ratings(text: str | None, n: int, *, typed: bool, allow_na: bool,
                  aspect: str | None = None) -> RatingsParse:
    """Parse a reply rating `n` texts (see the module docstring for what is read). `aspect`
    (`truthfulness`, `helpfulness`) lets Type values be written as category names alone."""
    if not text or not text.strip():
        return RatingsParse([None] * n, ["empty reply"] * n, "empty reply")
    lines = _lines(text)
    starts = [(i, k) for i, line in enumerate(lines) if (k := _header(line)) is not None]
    if not starts:
        msg = "no 'Output for Text k' blocks"
        return RatingsParse([None] * n, [msg] * n, msg)
    keyed: dict[int, list[list[str]]] = {}
    bare: dict[int, list[str]] = {}
    reply_error = None
    for j, (i, k) in enumerate(starts):
        body = lines[i + 1: starts[j + 1][0] if j + 1 < len(starts) else len(lines)]
        if not any(_KEY.fullmatch(line) for line in body):
            bare.setdefault(k, body)  # no field: not a block (or, if alone, a block to report)
        elif not 1 <= k <= n:
            reply_error = f"block for Text {k}, but only {n} texts were given"
        else:
            keyed.setdefault(k, []).append(body)
    annotations: list[dict | None] = []
    errors: list[str | None] = []
    for k in range(1, n + 1):
        found = keyed.get(k) or ([bare[k]] if k in bare else [])
        if len(found) != 1:
            annotations.append(None)
            errors.append(f"Text {k}: " + ("no block" if not found else "more than one block"))
            continue
        result = _annotation(_read_block(found[0], typed), typed, allow_na, aspect)
        if isinstance(result, str):
            annotations.append(None)
            errors.append(f"Text {k}: {result}")
        else:
            annotations.append(result)
            errors.append(None)
    return RatingsParse(annotations, errors, reply_error)


def _score(value: str) -> float | str:
    """The score a score line's value holds, or an error message."""
    m = _SCORE.fullmatch(_plain(value))
    if not m or not _label_ok(m.group("tail"), _SCALE_10):
        return f"Overall Score {_shown(value.strip())!r} is not a number from 1 to 10"
    score = float(m.group("n"))
    if not 1 <= score <= 10:
        return f"Overall Score {_shown(value.strip())!r} is outside 1 to 10"
    return score


def _is_overall(m: re.Match) -> bool:
    return " ".join(m.group("key").lower().split()) in ("overall score", "overall quality score")


def parse_critique(text: str | None) -> CritiqueParse:
    """Parse a teacher-feedback reply into (feedback, overall score 1-10)."""
    if not text or not text.strip():
        return CritiqueParse(None, None, "empty reply")
    lines = _lines(text)
    found = [(i, m) for i, line in enumerate(lines) if (m := _SCORE_KEY.fullmatch(line))]
    chosen = [(i, m) for i, m in found if _is_overall(m)]
    aliases = [m for _, m in found if not _is_overall(m)]
    if not chosen:
        last = max(i for i, line in enumerate(lines) if line.strip())
        if len(found) != 1 or found[0][0] != last:
            return CritiqueParse(None, None, "no 'Overall Score:' line")
        chosen, aliases = found, []
    scores: list[float | str] = []
    used: set[int] = set()
    for i, m in chosen:
        value, used = m.group("value"), used | {i}
        if not _plain(value):  # the value on the next non-empty line
            nxt = next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)
            if nxt is not None:
                value, used = lines[nxt], used | {nxt}
        scores.append(_score(value))
    errors = [s for s in scores if isinstance(s, str)]
    if errors:
        return CritiqueParse(None, None, errors[0])
    # a `Score:`-style line beside the Overall Score lines must agree with them if it holds a score
    beside = {s for m in aliases if isinstance(s := _score(m.group("value")), float)}
    if len(set(scores) | beside) > 1:
        return CritiqueParse(None, None, "more than one 'Overall Score:' line, with different values")
    at = chosen[-1][0]
    before = "\n".join(line for i, line in enumerate(lines[:at]) if i not in used)
    after = "\n".join(line for i, line in enumerate(lines) if i > at and i not in used)
    if _AFTER_SCORE.search(after):
        return CritiqueParse(None, None, "a number or score after the 'Overall Score:' line")
    feedback = (before if before.strip() else after).strip()
    feedback = _TRAILING_RULES.sub("", _FEEDBACK_HEADER.sub("", feedback, count=1).strip()).strip()
    if not feedback:
        return CritiqueParse(None, scores[0], "empty feedback")
    return CritiqueParse(feedback, scores[0])
