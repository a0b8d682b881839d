"""The SFT set in the ultrachat_200k shape (docs/derived.md#sft): its recipe, schema, and the
pure per-dialogue rules: truecasing of sentence starts, the AI-disclaimer filter, the optional
round and length filters.

HF's card names the steps but not the code (docs/datasets.md#ultrachat_200k): truecasing, since
about 5% of dialogues read like "Hello. how are you?", and dropping dialogues whose assistant says
it has no emotions or opinions. Ours:
- **Truecasing**: a lowercase letter that starts a message or follows `.`, `!` or `?` and a space
  becomes a capital, unless it lies in code (fenced or inline), follows an abbreviation
  ("e.g.", "Dr.", "etc."), an ellipsis or a closing quote, or starts a word that looks like
  code, a path or a URL (`x_1`, `file.txt`, `self(`). The prompt is the first user turn after repair, and
  `prompt_id` its sha256.
- **Disclaimers**: each assistant turn is searched for the phrases of disclaimers.txt; a dialogue
  with a match is dropped, counted under the first phrase that matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from tasks.core.derived.binarize import HUB_REPO, MESSAGE
from tasks.core.derived.splits import SplitSpec
from tasks.core.ids import prompt_id

SFT_SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()),
                        ("messages", pa.list_(MESSAGE))])
DISCLAIMERS = Path(__file__).with_name("disclaimers.txt")
BUILTIN = "builtin"


class SFTRecipe(BaseModel):
    """How landed UltraChat dialogues become the SFT set."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="ultrachat_200k", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Output folder: exports/sft/<name>/.")
    input: str = Field(
        default="exports/ultrachat/ultrachat/messages.parquet",
        description="Dialogues: a path in the lake, or a local path or URL of Parquet with a "
        "`messages` column ([{role, content}], user first) or UltraChat's `data` (alternating "
        "strings).")
    truecase: bool = Field(default=True, description="Capitalize sentence starts (see above).")
    disclaimers: str | None = Field(
        default=BUILTIN, description="Phrase file of the disclaimer filter (one regex a line): "
        "`builtin` for ours (tasks/core/derived/disclaimers.txt), a path (relative to the "
        "recipe's directory), or null for no filter.")
    min_rounds: int | None = Field(default=None, ge=1, description="Drop shorter dialogues.")
    max_rounds: int | None = Field(default=None, ge=1, description="Drop longer dialogues.")
    min_chars: int | None = Field(default=None, ge=1,
                                  description="Drop dialogues with fewer characters in all.")
    max_chars: int | None = Field(default=None, ge=1,
                                  description="Drop dialogues with more characters in all.")
    splits: SplitSpec = Field(default_factory=lambda: SplitSpec(test_size=0.1))
    push_to_hub: str | None = Field(
        default=None, pattern=HUB_REPO, description="Hub repo id (`owner/name`) to push to "
        "(needs a token and network).")


Drop = Literal["malformed", "disclaimer", "rounds", "length"]


class SFTRow(BaseModel):
    """One dialogue of the SFT set."""

    prompt: str
    prompt_id: str
    messages: list[dict[str, str]]


class SFTOutcome(BaseModel):
    """A dialogue kept (row set) or dropped (reason, and the phrase or problem)."""

    row: SFTRow | None = None
    drop: Drop | None = None
    detail: str | None = None
    truecased_messages: int = 0


# -- truecasing -----------------------------------------------------------------------------------

_CODE = re.compile(r"```.*?(?:```|\Z)|`[^`\n]*`", re.DOTALL)
_ABBREVIATIONS = {"e.g", "i.e", "etc", "vs", "cf", "approx", "a.m", "p.m", "mr", "mrs", "ms", "dr",
                  "prof", "st", "no", "fig", "al", "inc", "ltd", "jr", "sr", "u.s", "ca", "resp",
                  "viz", "ex", "vol", "pp", "ed", "est", "dept", "min", "max", "avg"}
# a candidate: start of text, or sentence punctuation (+ closing brackets) and whitespace;
# then a lowercase word and the character after it
# (not after a closing quote: `"Done," she said.` keeps its lowercase attribution)
_START = re.compile(r"(?:^|(?<=[.!?])[)\]]*[ \t\n]+)([a-z][\w'-]*)(\S?\S?)")
_PREV_WORD = re.compile(r"([A-Za-z.]+)\.[)\]]*[ \t\n]+$")


def _code_like(word: str, after: str) -> bool:
    """Whether a word (with the two characters after it) looks like code, a path, a URL or a
    name cased on purpose (iPhone, eBay, mRNA)."""
    if re.search(r"[_\dA-Z]", word) or (after[:1] and after[0] in "_/(=[{<@"):
        return True
    # file.txt, http://x, mailto:x
    return len(after) == 2 and after[0] in ".:" and (after[1].isalnum() or after[1] == "/")


def truecase(text: str) -> str:
    """`text` with sentence starts capitalized (see the module docstring); code untouched."""
    code = [m.span() for m in _CODE.finditer(text)]

    def in_code(i: int) -> bool:
        return any(a <= i < b for a, b in code)

    out = list(text)
    for m in _START.finditer(text):
        i, word, after = m.start(1), m.group(1), m.group(2)
        if in_code(i) or _code_like(word, after):
            continue
        before = text[:i]
        if before.rstrip().endswith(".."):  # an ellipsis, usually mid-sentence
            continue
        prev = _PREV_WORD.search(before)
        if prev and prev.group(1).lower().lstrip(".") in _ABBREVIATIONS:
            continue
        out[i] = word[0].upper()
    return "".join(out)


# -- disclaimers ----------------------------------------------------------------------------------

def phrases(path: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """(phrase as written, compiled pattern) of a phrase file; a ValueError names a bad line.
    Cached per file version, so an edited file is read again."""
    return _phrases(path, Path(path).stat().st_mtime_ns)


@cache
def _phrases(path: str, _version: int) -> tuple[tuple[str, re.Pattern[str]], ...]:
    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            pattern = re.compile(r"\b" + line.replace("'", "['’]"), re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{path} line {number}: not a regular expression ({exc})") from None
        out.append((line, pattern))
    return tuple(out)


def disclaimer(messages: Iterable[dict[str, str]],
               patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> str | None:
    """The first phrase an assistant turn matches, or None."""
    for m in messages:
        if m["role"] == "assistant":
            for phrase, pattern in patterns:
                if pattern.search(m["content"]):
                    return phrase
    return None


# -- one dialogue ---------------------------------------------------------------------------------

def as_messages(messages: list[dict] | None, data: list[str] | None) -> list[dict[str, str]] | str:
    """The dialogue as [{role, content}] alternating user/assistant from the user and ending
    with the assistant, or what is wrong with it."""
    if messages is None and data is not None:
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                    for i, t in enumerate(data)]
    if not messages:
        return "no messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return f"messages[{i}] is {type(m).__name__}, not a message"
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            return f"messages[{i}].role is {m.get('role')!r}, expected {want!r}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"messages[{i}].content is empty"
    if len(messages) % 2:  # a trailing user turn has no answer: dropped, as HF's script does
        messages = messages[:-1]
    if not messages:
        return "no assistant turn"
    return [{"content": m["content"], "role": m["role"]} for m in messages]


def process(recipe: SFTRecipe, messages: list[dict] | None, data: list[str] | None,
            patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> SFTOutcome:
    """Keep or drop one dialogue, in this order: malformed, disclaimer, rounds, length."""
    msgs = as_messages(messages, data)
    if isinstance(msgs, str):
        return SFTOutcome(drop="malformed", detail=msgs)
    if (phrase := disclaimer(msgs, patterns)) is not None:
        return SFTOutcome(drop="disclaimer", detail=phrase)
    rounds = sum(m["role"] == "assistant" for m in msgs)
    if (recipe.min_rounds and rounds < recipe.min_rounds) or (
            recipe.max_rounds and rounds > recipe.max_rounds):
        return SFTOutcome(drop="rounds", detail=str(rounds))
    chars = sum(len(m["content"]) for m in msgs)
    if (recipe.min_chars and chars < recipe.min_chars) or (
            recipe.max_chars and chars > recipe.max_chars):
        return SFTOutcome(drop="length", detail=str(chars))
    changed = 0
    if recipe.truecase:
        for m in msgs:
            fixed = truecase(m["content"])
            changed += fixed != m["content"]
            m["content"] = fixed
    prompt = msgs[0]["content"]
    return SFTOutcome(row=SFTRow(prompt=prompt, prompt_id=prompt_id(prompt), messages=msgs),
                      truecased_messages=changed)
