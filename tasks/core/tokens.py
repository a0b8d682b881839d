"""Token estimates used wherever exact tokenizers are unavailable (admission, dry-run costing)."""

from __future__ import annotations

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Rough token count: one token per four characters, at least one for non-empty text."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """Estimate for a chat prompt: content tokens plus a few per message for role framing."""
    return sum(estimate_tokens(str(m.get("content") or "")) + 4 for m in messages)
