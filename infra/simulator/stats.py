"""Counters behind GET /stats: outcomes, repeated paid calls, tokens per model, replies per kind,
content faults per choice."""

from __future__ import annotations

OUTCOMES = (
    "ok",
    "rate_limit_requests",
    "rate_limit_tokens",
    "request_too_large",
    "insufficient_quota",
    "injected_429",
    "error_500",
    "error_502",
    "error_503",
    "queue_full",
    "hang",
    "malformed",
    "length",
    "role_leak",
    "untranslated",
    "broken_code",
    "commentary",
    "bad_request",
)
# Content faults of one choice, in the order that picks a 200's outcome: twists, then a cut.
CONTENT_FAULTS = ("malformed", "role_leak", "untranslated", "broken_code", "commentary", "length")


class Stats:
    """Every request gets exactly one outcome, so `by_outcome` sums to `requests`.

    A 200 response has outcome "ok" or its first content fault in CONTENT_FAULTS' order (twists
    before "length", a cut by max_tokens or the `length` fault); `by_model[m]["ok"]` and `by_kind`
    (replies per route kind: "translate", "judge", ...) count all of them. `by_twist` counts
    content faults per choice, so an n=3 reply with two commentaries adds 2 to "commentary".
    "queue_full" is a 503 for a request that found every slot busy and `max_waiting` requests
    waiting ("error_503" is an injected fault). `ok_repeats` counts 200s for a body that already
    had one: the proof that no paid call was made twice (`ok_repeats_by_kind`: which kind of reply
    they were, to find the stage that paid twice). A hung request is counted as "hang" when
    it hangs; its late answer (the client has normally given up by then) is not counted again.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.by_outcome = dict.fromkeys(OUTCOMES, 0)
        self.ok_repeats = 0
        self.ok_repeats_by_kind: dict[str, int] = {}
        self.by_model: dict[str, dict[str, int]] = {}
        self.by_kind: dict[str, int] = {}
        self.by_twist = dict.fromkeys(CONTENT_FAULTS, 0)
        self._oks: dict[int, int] = {}  # 200s per body id

    def count(self, outcome: str) -> None:
        """One request that ended in `outcome`."""
        self.requests += 1
        self.by_outcome[outcome] += 1

    def answered(
        self, body_id: int, model: str, kind: str, faults: list[str],
        prompt_tokens: int, completion_tokens: int,
    ) -> None:
        """One request that got a 200, with the content faults of its choices."""
        self.count(next((f for f in CONTENT_FAULTS if f in faults), "ok"))
        for fault in faults:
            self.by_twist[fault] += 1
        seen = self._oks.get(body_id, 0)
        self._oks[body_id] = seen + 1
        if seen:
            self.ok_repeats += 1
            self.ok_repeats_by_kind[kind] = self.ok_repeats_by_kind.get(kind, 0) + 1
        usage = self.by_model.setdefault(model, {"ok": 0, "prompt_tokens": 0, "completion_tokens": 0})
        usage["ok"] += 1
        usage["prompt_tokens"] += prompt_tokens
        usage["completion_tokens"] += completion_tokens
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1

    def snapshot(self) -> dict:
        """The /stats document."""
        return {
            "requests": self.requests,
            "by_outcome": dict(self.by_outcome),
            "ok_repeats": self.ok_repeats,
            "ok_repeats_by_kind": dict(self.ok_repeats_by_kind),
            "by_model": {m: dict(u) for m, u in self.by_model.items()},
            "by_kind": dict(self.by_kind),
            "by_twist": dict(self.by_twist),
        }
