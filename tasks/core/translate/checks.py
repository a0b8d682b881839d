"""Checks of one translated chunk against its masked source: pure, and reporting every failing
reason at once, so a retry or a quarantine can say why (docs/translation.md).

Reasons (an empty output is reported as `empty`, and `truncated`, only):
- `truncated`: finish_reason "length".
- `spans_damaged`: tasks/core/translate/spans.py `span_damage`.
- `structure`: the Markdown signatures (`structure`) of source and output differ.
- `commentary`: a preamble ("Here is the translation:", "以下は翻訳です", "翻訳："), an opener
  ("Sure!", "はい、") or a note ("(Note: …)", "注：") that the source does not have as often.
- `untranslated`: the output is the source unchanged, or a run of `english_run` English words
  with at least two function words is left in (outside quotes, which a translation may keep).
- `wrong_script`: the target's letters are too small a share of the output's letters; quotes,
  placeholders and Latin words with a capital (names, acronyms, identifiers like useEffect) are
  not counted, as a translation keeps them. Japanese also needs kana, or it is Chinese.
- `length_ratio`: output/source non-space characters outside the language's band.

Short sources are where heuristics fail: "Yes" may come back as one kana word, "Python" stays
"Python", a code-only answer is just `⟦0⟧`, and "1, 2, 3" has no letters. So the script check
needs `min_letters` source letters, the length check `min_ratio_chars` source characters, and
the unchanged-output test `min_words` source words; the result's `skipped` says which checks did
not apply and why, including the script check for Latin-script targets (de, fr, es …), where
English and target words cannot be told apart by their letters.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.translate.spans import PLACEHOLDER, Mark, Masked, span_damage, structure

Reason = Literal["empty", "truncated", "spans_damaged", "structure", "commentary", "untranslated",
                 "wrong_script", "length_ratio"]


class Script(NamedTuple):
    """A target's letters, the least share of an output's letters they must make up, and
    letters that must appear once the output has `min_letters` of the script (kana for
    Japanese, without which kanji text is Chinese)."""

    name: str
    letters: re.Pattern[str]
    min_share: float
    required: re.Pattern[str] | None = None
    required_name: str = ""


_KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HAN = "\u3005-\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
_CYRILLIC = "\u0400-\u052f"
_ARABIC = "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff"

# Shares: CJK characters and Hangul blocks each carry two to four Latin letters' worth of text,
# so a technical Japanese answer that keeps its English names (React, useEffect, AWS Lambda) can
# sit near 40% by count; an untranslated one is near 0%. Alphabetic scripts spell words out
# letter by letter, so kept names weigh less and half the letters is a safe floor.
SCRIPTS: dict[str, Script] = {
    "ja": Script("Japanese (kana, kanji)", re.compile(f"[{_KANA}{_HAN}]"), 0.3,
                 re.compile(f"[{_KANA}]"), "kana"),
    "zh": Script("Chinese (Han)", re.compile(f"[{_HAN}]"), 0.3),
    "ko": Script("Korean (Hangul)", re.compile(f"[{_HANGUL}]"), 0.3),
    "ru": Script("Cyrillic", re.compile(f"[{_CYRILLIC}]"), 0.5),
    "uk": Script("Cyrillic", re.compile(f"[{_CYRILLIC}]"), 0.5),
    "ar": Script("Arabic", re.compile(f"[{_ARABIC}]"), 0.5),
    "he": Script("Hebrew", re.compile("[\u0590-\u05ff\ufb1d-\ufb4f]"), 0.5),
    "el": Script("Greek", re.compile("[\u0370-\u03ff\u1f00-\u1fff]"), 0.5),
    "th": Script("Thai", re.compile("[\u0e00-\u0e7f]"), 0.5),
    "hi": Script("Devanagari", re.compile("[\u0900-\u097f]"), 0.5),
}

# Output/source characters, whitespace and placeholders not counted (English has a space every
# ~6 characters, Japanese none). Japanese runs at ~0.4-0.6 of English in prose (a kanji compound
# for an English word), ~0.3 in dense formal text, up to ~1.0 with kept Latin names and long
# katakana loanwords; below 0.25 content was dropped, above 1.3 something was added (notes,
# repetition) or left in English. Chinese is denser still, Korean close to Japanese; Cyrillic and
# Greek words run ~10-20% longer than English, Arabic and Hebrew shorter (short vowels unwritten),
# Latin-script languages 1.1-1.3. Starting points: tune on a translated sample.
LENGTH_BANDS: dict[str, tuple[float, float]] = {
    "ja": (0.25, 1.3), "zh": (0.2, 1.0), "ko": (0.25, 1.1), "ru": (0.8, 1.6), "uk": (0.8, 1.6),
    "el": (0.8, 1.6), "ar": (0.6, 1.4), "he": (0.5, 1.3), "th": (0.6, 1.6), "hi": (0.7, 1.6),
}
OTHER_BAND = (0.7, 1.8)


class CheckLimits(BaseModel):
    """Thresholds of the checks; `script_share` and `length_band` override the language's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_letters: int = Field(default=20, ge=1, description="Source letters the script check needs.")
    min_ratio_chars: int = Field(default=80, ge=1,
                                 description="Source characters (no spaces) the length check needs.")
    min_words: int = Field(default=3, ge=1, description="Source words (one of them a function "
                           "word) for 'output equals source' to count as untranslated: a name, a "
                           "list of names or a short phrase may stay as it is.")
    english_run: int = Field(default=7, ge=2, description="English words in a row (with at least "
                             "two function words) that count as left untranslated.")
    script_share: float | None = Field(default=None, ge=0, le=1)
    length_band: tuple[float, float] | None = None


class CheckResult(BaseModel):
    """The failing reasons, a short detail for each, and the checks that did not apply."""

    model_config = ConfigDict(frozen=True)

    reasons: tuple[Reason, ...] = ()
    details: dict[Reason, str] = Field(default_factory=dict)
    skipped: dict[Reason, str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reasons


_FUNCTION_WORDS = frozenset({
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "from", "by",
    "as", "is", "are", "was", "were", "be", "been", "it", "its", "this", "that", "these", "those",
    "you", "your", "we", "our", "they", "their", "can", "will", "would", "should", "not", "if", "do",
    "does", "have", "has"})
_LATIN_RUN = re.compile(r"[A-Za-z][A-Za-z'’-]*(?:(?:[ \t]*[,.;:!?]?[ \t]+|,)[A-Za-z][A-Za-z'’-]*)*")
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
# Single quotes: from one not after a letter to the next not before one ("'She don't know.'").
_QUOTED = re.compile(r"「[^」\n]*」|『[^』\n]*』|\"[^\"\n]*\"|“[^”\n]*”|‘[^’\n]*’"
                     r"|(?<![A-Za-z])'.*?'(?![A-Za-z])")
_WORD = re.compile(r"[^\W\d_]+")
_NAME = re.compile(r"(?<![A-Za-z])[A-Za-z]*[A-Z][A-Za-z]*(?![A-Za-z])")

# Commentary, in English and Japanese. Counted in source and output: the output may hold as many
# as the source does (an English "Note:" line becomes "注："), not more.
_COMMENTARY = {
    "preamble": re.compile(
        r"^[^\w\n]*(?:here(?:['’]s| is| are)\b.*\b(?:translat|version\b)"
        r"|(?:\w+[ \t]+)?translat(?:ion|ed[ \t]+text)\b[^:：\n]{0,20}[:：]|(?:japanese|日本語)\s*[:：]"
        r"|以下[はが、].{0,30}訳|.{0,12}訳\s*[:：]|.{0,12}訳(?:文|結果)(?:は|です|\s*[:：])"
        r"|.{0,12}翻訳(?:します|しました|いたします))",
        re.IGNORECASE | re.MULTILINE),
    # at a line start, or in brackets anywhere: "…立てましょう。（注：…）"
    "note": re.compile(r"(?:^[^\w\n]*|[(（]\s*)(?:(?:translator'?s?\s+)?notes?|訳注|注|補足|備考)\s*[:：]",
                       re.IGNORECASE | re.MULTILINE),
}
_OPENER = re.compile(r"[^\w\n]*(?:(?:sure|certainly|of course|absolutely|definitely|okay|ok|alright"
                     r"|yes|no problem|got it|understood)\b|はい|もちろん|承知|かしこまり|了解)",
                     re.IGNORECASE)


def _text(masked_or_output: str) -> str:
    """The text with each placeholder turned into a space: it is neither letter nor word."""
    return PLACEHOLDER.sub(" ", masked_or_output)


def _unquoted(text: str) -> str:
    """The text without quoted passages, which a translation may rightly keep as they are."""
    return _QUOTED.sub("|", text)


def _letters(text: str) -> list[str]:
    return [c for c in text if c.isalpha()]


def _chars(text: str) -> int:
    return sum(not c.isspace() for c in text)


def _shown(line: str) -> str:
    line = line.strip()
    return line if len(line) <= 40 else line[:37] + "..."


def _commentary(source: str, output: str) -> str | None:
    for kind, pattern in _COMMENTARY.items():
        found = list(pattern.finditer(output))
        if len(found) > len(pattern.findall(source)):
            line = output[found[-1].start():].split("\n", 1)[0]
            return f"{kind} line not in the source: {_shown(line)!r}"
    first = output.strip().split("\n", 1)[0]
    if _OPENER.match(first) and not _OPENER.match(source.strip()):
        return f"opener not in the source: {_shown(first)!r}"
    return None


def _english_left(output: str, limits: CheckLimits) -> str | None:
    """A run of English words (outside quotes) that no translation would keep."""
    for line in _unquoted(output).split("\n"):
        for run in _LATIN_RUN.finditer(line):
            words = _LATIN_WORD.findall(run.group())
            if (len(words) >= limits.english_run
                    and sum(w.lower() in _FUNCTION_WORDS for w in words) >= 2):
                return f"English left in: {_shown(run.group())!r}"
    return None


def _structure(source: str, output: str) -> str | None:
    want, got = structure(source), structure(output)
    if want == got:
        return None
    for i, (a, b) in enumerate(zip(want, got, strict=False)):
        if a != b:
            return f"line mark {i + 1}: {_describe(a)} in the source, {_describe(b)} in the output"
    return f"{len(want)} line marks in the source, {len(got)} in the output"


def _describe(mark: Mark) -> str:
    shown = mark.kind if not mark.value else f"{mark.kind} {mark.value}"
    return f"nested {shown}" if mark.nested else shown


def check(source: Masked, output: str, finish_reason: str | None, lang: str,
          limits: CheckLimits | None = None) -> CheckResult:
    """Every reason `output` fails as the `lang` translation of `source.text` (a masked text
    or segment; see the module docstring)."""
    limits = limits or CheckLimits()
    failed: dict[Reason, str] = {}
    skipped: dict[Reason, str] = {}
    if finish_reason == "length":
        failed["truncated"] = "the reply hit its token limit"
    if not output.strip():
        failed["empty"] = "the reply is empty"
        return _result(failed, skipped)

    if damage := span_damage(output, source):
        failed["spans_damaged"] = damage
    if damage := _structure(source.text, output):
        failed["structure"] = damage
    if damage := _commentary(source.text, output):
        failed["commentary"] = damage

    src, out = _text(source.text), _text(output)
    script = SCRIPTS.get(lang)
    for reason, verdict in (("untranslated", _untranslated(src, out, script, lang, limits)),
                            ("wrong_script", _wrong_script(src, out, script, lang, limits)),
                            ("length_ratio", _length_ratio(src, out, lang, limits))):
        if verdict is not None:
            (failed if verdict[0] else skipped)[reason] = verdict[1]
    return _result(failed, skipped)


# A verdict: (True, detail) for a failure, (False, why) for a check that did not apply, or None.
Verdict = tuple[bool, str] | None


def _untranslated(src: str, out: str, script: Script | None, lang: str, limits: CheckLimits) -> Verdict:
    words = [w.lower() for w in _WORD.findall(src)]
    same = " ".join(src.casefold().split()) == " ".join(out.casefold().split())
    if same and len(words) >= limits.min_words and not _FUNCTION_WORDS.isdisjoint(words):
        return True, "the output is the source unchanged"
    if script is None:
        return False, f"{lang}: Latin-script target, only an unchanged output is caught"
    left = _english_left(out, limits)
    return (True, left) if left else None


def _wrong_script(src: str, out: str, script: Script | None, lang: str, limits: CheckLimits) -> Verdict:
    if script is None:
        return False, f"{lang}: no script to check (Latin-script target)"
    if (n := len(_letters(src))) < limits.min_letters:
        return False, f"source has {n} letters (< {limits.min_letters})"
    letters = _letters(_NAME.sub(" ", _unquoted(out)))
    if not letters:
        return False, "no output letters besides names and quotes"
    matched = [c for c in letters if script.letters.match(c)]
    share = len(matched) / len(letters)
    floor = script.min_share if limits.script_share is None else limits.script_share
    if share < floor:
        return True, f"{script.name} letters are {share:.0%} of letters (< {floor:.0%})"
    if (script.required and len(matched) >= limits.min_letters
            and not any(script.required.match(c) for c in matched)):
        return True, f"{len(matched)} {script.name} letters, no {script.required_name}"
    return None


def _length_ratio(src: str, out: str, lang: str, limits: CheckLimits) -> Verdict:
    if (n := _chars(src)) < limits.min_ratio_chars:
        return False, f"source has {n} characters (< {limits.min_ratio_chars})"
    low, high = limits.length_band or LENGTH_BANDS.get(lang, OTHER_BAND)
    ratio = _chars(out) / n
    if not low <= ratio <= high:
        return True, f"output/source characters {ratio:.2f} outside {low}-{high}"
    return None


def _result(failed: dict[Reason, str], skipped: dict[Reason, str]) -> CheckResult:
    reasons = tuple(r for r in get_args(Reason) if r in failed)
    return CheckResult(reasons=reasons, details={r: failed[r] for r in reasons}, skipped=skipped)
