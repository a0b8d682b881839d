"""A conservative language check for turns: script share plus, for English, function words.

Statistical identifiers misjudge short chat turns ("Why?", "Thanks, and in Rust?"), and a false
reject costs a paid dialogue, so this only says "mismatch" when the evidence is strong: most letters
in another script, or a long Latin-script text with almost no English function words.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_EN_FUNCTION_WORDS = frozenset((
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "for", "with", "from",
    "by", "is", "are", "was", "were", "be", "been", "it", "this", "that", "these", "those",
    "what", "which", "who", "how", "why", "when", "where", "do", "does", "did", "can", "could",
    "would", "should", "will", "you", "your", "i", "my", "we", "our", "they", "their", "he",
    "she", "his", "her", "not", "no", "yes", "if", "then", "than", "as", "so", "about", "into"))
# Expected script per language code; languages not listed here are not checked.
_SCRIPTS = {"en": "LATIN", "fr": "LATIN", "de": "LATIN", "es": "LATIN", "it": "LATIN",
            "pt": "LATIN", "ru": "CYRILLIC", "el": "GREEK", "ar": "ARABIC", "he": "HEBREW",
            "ja": "CJK", "zh": "CJK", "ko": "HANGUL"}
MIN_WORDS_FOR_WORD_CHECK = 12


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA")):
        return "CJK"
    return name.split(" ", 1)[0]


def language_mismatch(text: str, lang: str) -> bool:
    """True when `text` is clearly not written in `lang` (unknown codes and short texts pass)."""
    expected = _SCRIPTS.get(lang)
    letters = [c for c in text if c.isalpha()]
    if expected is None or len(letters) < 8:
        return False
    share = sum(_script(c) == expected for c in letters) / len(letters)
    if share < 0.5:
        return True
    if lang != "en":
        return False
    words = [w.lower() for w in _WORD.findall(text)]
    if len(words) < MIN_WORDS_FOR_WORD_CHECK:
        return False
    return sum(w in _EN_FUNCTION_WORDS for w in words) / len(words) < 0.05
