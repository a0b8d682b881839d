"""Translation work, pure: a text as chunks to translate and separators to copy, each chunk's
request, and the text put back together from the chunks' translations (docs/translation.md).

A chunk's placeholders are numbered from 0 within the chunk (`local`), so equal chunks of
different texts (a system prompt repeated over thousands of records, a shared paragraph) are
one request, one content key and one paid call; each occurrence is unmasked with its own spans.
A retranslation is a new request: `sample_index` is the attempt and `retry_params` apply (a
sampling temperature, so that the model can answer differently).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.chat import ChatRequest, Route
from tasks.core.pool import Sampling
from tasks.core.tokens import estimate_tokens
from tasks.core.translate.checks import CheckLimits, Reason
from tasks.core.translate.prompt import language_name, messages
from tasks.core.translate.segments import is_chunk, split
from tasks.core.translate.spans import PLACEHOLDER, Masked, Protect, mask, unmask

# a chunk that got no translation at all: its call failed for good, or waits in a batch
Flag = Reason | Literal["failed", "pending"]
# a reply with these is no translation of its chunk: text or protected spans are missing
UNUSABLE: frozenset[str] = frozenset({"empty", "truncated", "spans_damaged"})


class TranslationSpec(BaseModel):
    """How texts are translated: model, language, sampling, chunking, protection, checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="gpt-4-translator", description="Pool model that translates.")
    lang: str = Field(default="ja", description="Target language code (tasks/core/translate/"
                      "prompt.py LANGUAGES).")
    params: Sampling = Field(default_factory=lambda: {"temperature": 0, "max_tokens": 2048})
    retry_params: Sampling = Field(default_factory=lambda: {"temperature": 0.7},
                                   description="Over `params` for retranslations.")
    max_chunk_tokens: int = Field(default=800, ge=16, description="Source tokens per call; "
                                  "longer texts are cut at paragraph, line, sentence breaks.")
    max_retranslations: int = Field(default=2, ge=0, le=10, description="Calls after a chunk "
                                    "failed a check; then it is flagged with its reasons.")
    route: Route = Field(default="online", description="`online` or `batch` (half price).")
    protect: Protect = Field(default_factory=Protect)
    checks: CheckLimits = Field(default_factory=CheckLimits)

    def model_post_init(self, _: object) -> None:
        language_name(self.lang)  # an unknown code is an error here, not at the first call

    def request(self, chunk: Masked, attempt: int) -> ChatRequest:
        """The call translating `chunk`, the `attempt`-th time. Its `max_tokens` is at least
        4× the chunk's estimate: Japanese takes more tokens than the English it translates."""
        params = dict(self.params) if attempt == 0 else {**self.params, **self.retry_params}
        params["max_tokens"] = max(params.get("max_tokens", 0), 4 * estimate_tokens(chunk.text) + 64)
        return ChatRequest(model=self.model, messages=tuple(messages(chunk.text, self.lang)),
                           params=params, sample_index=attempt, route=self.route,
                           stage="translation")


class TextPlan(BaseModel):
    """One text as pieces: separators (str, copied) and chunks (Masked, translated)."""

    model_config = ConfigDict(frozen=True)

    pieces: tuple[str | Masked, ...]

    @property
    def chunks(self) -> list[Masked]:
        return [p for p in self.pieces if isinstance(p, Masked)]


class ChunkOutcome(BaseModel):
    """The last translation of a chunk (masked, None if no call answered) and what its checks,
    or its calls, found wrong; `attempts` calls were made for it."""

    model_config = ConfigDict(frozen=True)

    text: str | None
    flags: dict[Flag, str] = Field(default_factory=dict)
    attempts: int = 1


class TextOutcome(BaseModel):
    """A translated text (None when a chunk has no translation) and the flags of its chunks."""

    model_config = ConfigDict(frozen=True)

    text: str | None
    flags: dict[Flag, str] = Field(default_factory=dict)


def better(best: ChunkOutcome | None, new: ChunkOutcome, attempts: int) -> ChunkOutcome:
    """The outcome to keep after `attempts` calls: a translation over none, then the one with
    fewer flags, the earlier on a tie (a failed retry never loses a usable first answer)."""
    if best is not None and ((best.text is not None, -len(best.flags))
                             >= (new.text is not None, -len(new.flags))):
        return best.model_copy(update={"attempts": attempts})
    return new.model_copy(update={"attempts": attempts})


def local(chunk: str, spans: tuple[str, ...]) -> Masked:
    """`chunk` with its placeholders renumbered from 0 in order, and its own spans."""
    order: list[int] = []

    def renumber(m: re.Match[str]) -> str:
        n = int(m.group(1))
        if n not in order:
            order.append(n)
        return f"⟦{order.index(n)}⟧"

    text = PLACEHOLDER.sub(renumber, chunk)
    return Masked(text=text, spans=tuple(spans[n] for n in order))


# languages written without a space between sentences: the space of a sentence break between
# two chunks (a separator with no line break) is not copied into the translation
UNSPACED = frozenset({"ja", "zh"})


def plan_text(text: str, spec: TranslationSpec) -> TextPlan:
    masked = mask(text, spec.protect)
    parts = split(masked.text, spec.max_chunk_tokens)
    unspaced = spec.lang in UNSPACED

    def piece(i: int, p: str) -> str | Masked:
        if is_chunk(p):
            return local(p, masked.spans)
        between = 0 < i < len(parts) - 1
        return "" if unspaced and between and "\n" not in p else p

    return TextPlan(pieces=tuple(piece(i, p) for i, p in enumerate(parts)))


def assemble(plan: TextPlan, outcomes: dict[str, ChunkOutcome]) -> TextOutcome:
    """The text from its chunks' outcomes (keyed by the chunk's masked text); the flags of the
    chunks, the first detail of each reason kept."""
    out: list[str] = []
    flags: dict[Flag, str] = {}
    for piece in plan.pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        outcome = outcomes[piece.text]
        for reason, detail in outcome.flags.items():
            flags.setdefault(reason, detail)
        if outcome.text is not None:
            out.append(unmask(outcome.text.strip(), piece))
    complete = all(outcomes[c.text].text is not None for c in plan.chunks)
    return TextOutcome(text="".join(out) if complete else None, flags=flags)
