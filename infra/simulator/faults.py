"""Seeded draws: which fault (if any) a request attempt gets, and how one choice is twisted.

Draws come from (seed, body hash, attempt number of that body), never from arrival order, so a
retried request can succeed and a whole run replays the same way.

A client that rejects a translation and asks again gets a fresh twist draw either way: resending
the same body is its next attempt (same text, since content depends on seed and body only, but a
new draw), and changing the body (its `seed` or `temperature` field) changes the body hash (new
text and a new draw from attempt 0).
"""

from __future__ import annotations

import hashlib
import random

from infra.simulator.config import Faults
from infra.simulator.content import has_code
from infra.simulator.grading import MALFORMABLE
from infra.simulator.routes import Ask

TRANSLATION_TWISTS = ("untranslated", "broken_code", "commentary")  # drawn in this order


def rng_for(*parts: object) -> random.Random:
    """A Random seeded by the parts' repr: equal parts give equal sequences on every run."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def draw_fault(faults: Faults, rng: random.Random) -> str | None:
    """An injected failure for the whole request ("injected_429", "error_5xx", "hang") or None."""
    third = faults.rate_5xx / 3
    u = rng.random()
    for outcome, rate in (
        ("injected_429", faults.rate_429),
        ("error_500", faults.rate_500 + third),
        ("error_502", faults.rate_502 + third),
        ("error_503", faults.rate_503 + third),
        ("hang", faults.hang),
    ):
        if u < rate:
            return outcome
        u -= rate
    return None


def draw_twist(faults: Faults, rng: random.Random, ask: Ask) -> str | None:
    """A content fault for one choice: "malformed" (judge, critique), "role_leak" (user turns),
    "untranslated", "broken_code" or "commentary" (translations; broken_code only when there is
    code to break, so every drawn twist does damage)."""
    kind = ask.route.kind
    if kind in MALFORMABLE and rng.random() < faults.malformed:
        return "malformed"
    if kind == "user_turn" and rng.random() < faults.role_leak:
        return "role_leak"
    if kind == "translate":
        u = rng.random()
        for twist in TRANSLATION_TWISTS:
            rate = getattr(faults, twist)
            if u < rate:
                return None if twist == "broken_code" and not has_code(ask) else twist
            u -= rate
    return None
