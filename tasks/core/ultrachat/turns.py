"""Judging single turns: role-label and meta-text stripping, refusals, assistant-sounding user turns."""

from __future__ import annotations

import re

from tasks.core.ultrachat.text import normalize

_ROLE = r"(?:user|human|you|me|customer|student|assistant|ai|ai assistant|chatbot|bot|gpt|chatgpt|system)"
# "User:", "**User:**", "[User]:", "[You]\n", "### User -", "User (me):" at the very start.
_LEADING_LABEL = re.compile(
    rf"^\s*(?:#+\s*)?[\[(*_]*\s*{_ROLE}(?:\s*\([^)]{{0,20}}\))?\s*"
    r"(?:[:：]\s*[\])*_]*|[\])*_]*\s*[:：\-–—]|[\])]\s*\n)\s*", re.I)
# Meta text a role-playing model puts before the turn itself.
_LEADING_META = re.compile(
    r"^\s*(?:"
    r"(?:as|playing|speaking as|in the role of) the (?:human )?user\s*[:,]"
    r"|(?:i would|i'd|i will|i'll|i might|i want to|i'd like to) (?:ask|say|write|reply|respond)"
    r"[^:\n]{0,30}:"
    r"|(?:here is|here's|this is) (?:my|the|a) (?:next |follow[- ]up |possible )?"
    r"(?:user )?(?:message|question|reply|response|turn|follow[- ]up)[^:\n]{0,40}:"
    r"|(?:next|my|the) (?:user )?(?:message|question|turn|follow[- ]up)[^:\n]{0,30}:"
    r"|(?:the )?user (?:would|might|could|will) (?:ask|say|reply|respond|write)[^:\n]{0,30}[:,]"
    r")\s*", re.I)
# A later line where the model starts writing the other side of the conversation.
_LATER_LABEL = re.compile(rf"\n\s*[\[(*_]*\s*{_ROLE}\s*[\])*_]*\s*:", re.I)
_QUOTES = (('"', '"'), ("“", "”"), ("'", "'"), ("«", "»"))

_ROLE_LABEL = r"^\s*[\[(*_#]*\s*(?:user|human|assistant|ai assistant|system)\s*[\])*_]*\s*:"
ROLE_LABEL_AT_START = re.compile(_ROLE_LABEL, re.I)
ROLE_LABEL_AT_LINE_START = re.compile(_ROLE_LABEL, re.I | re.M)
META_PHRASE = re.compile(
    r"(?:\bas the (?:human )?user,? (?:i|i'd|i'll|i would|i will|i might|my)\b"
    r"|\b(?:i'm|i am) (?:playing|role-?playing|acting as|simulating) (?:the|a) (?:human )?user\b"
    r"|\b(?:in my role as|speaking as|playing the role of) (?:the|a) (?:human )?user\b"
    r"|\bthe user (?:would|might) (?:ask|say|reply|respond)\b)", re.I)

_ASSISTANT_OPENERS = re.compile(
    r"^\s*(?:(?:certainly|sure(?: thing)?|of course|absolutely)(?:[!.]|,? (?:here|i)\b)"
    r"|great question|good question"
    r"|i'd be (?:happy|glad) to|i would be (?:happy|glad) to|i'm (?:happy|glad) to help"
    r"|as an ai\b|as a language model|thank you for (?:your|the) question"
    r"|here (?:is|are) (?:a|an|the|some) (?:few |brief |detailed |possible )?"
    r"(?:answer|explanation|overview|summary|list|steps|tips|ways|examples|ideas|suggestions)\b"
    r")", re.I)
_ASSISTANT_CLOSERS = re.compile(
    r"(?:i hope (?:this|that) helps|let me know if you (?:have|need) (?:any )?(?:other|more|further)"
    r"|feel free to ask|is there anything else i can (?:help|assist)|happy to help further)", re.I)
_REFUSAL = re.compile(
    r"^\s*(?:i'm sorry|i am sorry|sorry|apologies|unfortunately)?[,.!]?\s*(?:but\s+)?"
    r"(?:i (?:can(?:no|')t|cannot|am unable to|'m unable to|won't be able to|am not able to"
    r"|'m not able to|must decline to)) "
    r"(?:help|assist|provide|fulfil|fulfill|comply|do that|answer|continue|write|complete|create"
    r"|engage|generate|respond)", re.I)


def strip_role_labels(text: str) -> tuple[str, bool]:
    """Remove leading role labels/meta text, wrapping quotes and any other-side continuation.

    Returns the cleaned text and whether anything was removed.
    """
    out = text.strip()
    for _ in range(4):
        before = out
        out = _LEADING_LABEL.sub("", out, count=1)
        out = _LEADING_META.sub("", out, count=1)
        m = _LATER_LABEL.search(out)
        if m:
            out = out[:m.start()]
        out = out.strip()
        for a, b in _QUOTES:
            if len(out) >= 2 and out.startswith(a) and out.endswith(b) and out.count(a) <= 2:
                out = out[len(a):-len(b)].strip()
        if out == before:
            break
    return out, out != text.strip()


def strip_leading_label(text: str) -> tuple[str, bool]:
    """Remove only a leading role label ("Assistant:"), for assistant turns."""
    out = _LEADING_LABEL.sub("", text.strip(), count=1).strip() \
        if ROLE_LABEL_AT_START.match(text) else text.strip()
    return out, out != text.strip()


def has_role_leakage(text: str, role: str = "user") -> bool:
    """Whether a role label or role-play meta text is still visible in a finished turn.

    A user turn is checked on every line; an assistant turn only at its start, since answers may
    legitimately contain a scripted dialogue with "User:" lines.
    """
    if role == "assistant":
        return bool(ROLE_LABEL_AT_START.search(text))
    return bool(ROLE_LABEL_AT_LINE_START.search(text) or META_PHRASE.search(text))


def is_refusal(text: str) -> bool:
    """A turn that declines to help (checked at its start: long answers may mention limits later)."""
    return bool(_REFUSAL.match(text[:300]))


def reads_like_assistant(text: str) -> bool:
    """A user-simulator turn that answers like an assistant instead of asking like a user."""
    head = text.strip()[:400]
    if _ASSISTANT_OPENERS.match(head):
        return True
    return bool(_ASSISTANT_CLOSERS.search(text[-300:]))


def same_turn(a: str, b: str) -> bool:
    """Two turns that say the same thing once case, punctuation and spacing are ignored."""
    return normalize(a) == normalize(b)
