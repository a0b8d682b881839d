"""Texts translated through the gateway, chunk by chunk, checked, retranslated up to
`max_retranslations` times, then flagged (docs/translation.md).

Each unique chunk is one request: the journal answers repeats and reruns without a call, and
the gateway paces, retries and (route `batch`) batches the calls like every other stage's.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field

from tasks.adapters.llm.gateway import Gateway
from tasks.core.chat import ChatResult
from tasks.core.translate.checks import check
from tasks.core.translate.spans import Masked
from tasks.core.translate.work import (
    UNUSABLE,
    ChunkOutcome,
    TextOutcome,
    TranslationSpec,
    assemble,
    better,
    plan_text,
)


class TranslationRun(BaseModel):
    """What a batch of texts cost and found: chunks, unique ones, retranslations, flags."""

    texts: int = 0
    chunks: int = 0
    unique_chunks: int = 0
    retranslations: int = 0
    flagged_chunks: int = 0
    flags: dict[str, int] = Field(default_factory=dict, description="Flagged chunks by reason.")
    results: list[ChatResult] = Field(default_factory=list, description="Every call's result.")


async def translate_texts(gateway: Gateway, spec: TranslationSpec,
                          texts: list[str]) -> tuple[list[TextOutcome], TranslationRun]:
    """One outcome per text, in order, and the run's counts."""
    plans = [plan_text(t, spec) for t in texts]
    unique: dict[str, Masked] = {}
    for plan in plans:
        for chunk in plan.chunks:
            unique.setdefault(chunk.text, chunk)
    outcomes, run = await translate_chunks(gateway, spec, unique)
    run.texts, run.chunks = len(texts), sum(len(p.chunks) for p in plans)
    return [assemble(plan, outcomes) for plan in plans], run


async def translate_chunks(gateway: Gateway, spec: TranslationSpec,
                           unique: dict[str, Masked]) -> tuple[dict[str, ChunkOutcome], TranslationRun]:
    """Each chunk (keyed by its masked text) translated, checked and retranslated as needed:
    its outcome, and the calls' counts. The same chunks give the same calls, attempt by
    attempt, so a chunk translated here once is answered by the journal ever after."""
    run = TranslationRun(unique_chunks=len(unique))  # texts and chunks: the caller's to count
    outcomes: dict[str, ChunkOutcome] = {}
    todo = list(unique)
    for attempt in range(spec.max_retranslations + 1):
        if not todo:
            break
        run.retranslations += len(todo) if attempt else 0
        results = await gateway.complete_all([spec.request(unique[t], attempt) for t in todo])
        run.results.extend(results)
        again = []  # chunks whose reply failed a check (a failed or pending call is final)
        for text, result in zip(todo, results, strict=True):
            if result.pending:
                outcome = ChunkOutcome(text=None, flags={"pending": result.pending})
            elif not result.ok:
                outcome = ChunkOutcome(text=None, flags={"failed": result.error or ""})
            else:
                found = check(unique[text], result.text, result.finish_reason, spec.lang, spec.checks)
                # a reply missing text or protected spans is no translation of the chunk
                unusable = not UNUSABLE.isdisjoint(found.reasons)
                outcome = ChunkOutcome(text=None if unusable else result.text,
                                       flags=dict(found.details))
                if not found.ok:
                    again.append(text)
            outcomes[text] = better(outcomes.get(text), outcome, attempt + 1)
        todo = [t for t in again if outcomes[t].flags]
    flagged = [o for o in outcomes.values() if o.flags]
    run.flagged_chunks = len(flagged)
    run.flags = dict(sorted(Counter(r for o in flagged for r in o.flags).items()))
    return outcomes, run
