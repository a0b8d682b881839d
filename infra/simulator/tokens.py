"""The simulator's token count: words, numbers and punctuation, the way BPE tokenizers split text.

Deliberately not the gateway's estimate (chars/4, tasks/core/tokens.py): a real endpoint counts
with its own tokenizer, so the gateway's TPM pacing is tested against a count it cannot compute.
A run of ASCII letters is one token per six letters (started), a number one per three digits,
every other visible character (punctuation, CJK) one token; whitespace is free. English prose from
the word banks comes out at ~4.3 characters a token, a little over the gateway's 4.
"""

from __future__ import annotations

import re

# Characters of generated English per budgeted token: under the ~4.3 this count finds in the
# word banks' prose, so an answer written for a budget of n tokens counts at most n.
PROSE_CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # role and framing tokens per chat message

_PIECE = re.compile(r"[A-Za-z]+|[0-9]{1,3}|\S")


def _cost(piece: str) -> int:
    return 1 + (len(piece) - 1) // 6 if piece[0].isascii() and piece[0].isalpha() else 1


def count_tokens(text: str) -> int:
    """Tokens in `text` (0 for empty or blank text)."""
    return sum(_cost(m.group()) for m in _PIECE.finditer(text))


def prompt_tokens(messages: list[dict]) -> int:
    """Tokens of a chat prompt: each message's text plus MESSAGE_OVERHEAD."""
    return sum(count_tokens(_text(m.get("content"))) + MESSAGE_OVERHEAD for m in messages)


def truncate(text: str, limit: int) -> str:
    """The longest prefix of `text` that counts at most `limit` tokens, cut after a whole token."""
    used, end = 0, 0
    for m in _PIECE.finditer(text):
        used += _cost(m.group())
        if used > limit:
            break
        end = m.end()
    return text[:end]


def _text(content: object) -> str:
    if isinstance(content, list):  # content parts: the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")
