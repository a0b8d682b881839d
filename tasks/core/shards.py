"""What a shard task returns (tasks/shards.py): small and typed, enough for the run's counts;
and how a run's shards are shared out between child runs (tasks/scaleout.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.core.usage import UsageRow


class ShardSummary(BaseModel):
    """What a shard task returns: small, typed, and enough for the run's counts."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    key: str
    status: Literal["done", "partial", "pending", "skipped"] = Field(
        description="done: every call final; partial: some failed for good (rerun retries "
        "them); pending: some wait in batches (rerun collects them); skipped: nothing was "
        "missing")
    items: int = Field(0, description="Inputs the shard covered (prompts, dialogues, ...).")
    rows: int = Field(0, description="Result rows landed.")
    failures: int = Field(0, description="Jobs whose call failed for good.")
    pending: int = Field(0, description="Jobs waiting in batches that have not finished.")
    replies: int = Field(0, description="Judge replies received (annotation, critique).")
    unparsed: int = Field(0, description="Judge replies that did not parse completely.")
    waited_s: float = Field(0.0, description="Time spent waiting for another claimant's lease.")
    usage: list[UsageRow] = Field(default_factory=list)
    finished: float = Field(default_factory=time.time, description="Unix time the shard task "
                            "ended: of two runs of one shard (a part's and its parent's), the "
                            "later says how the shard stands.")


def paid_requests(shards: Iterable[ShardSummary]) -> int:
    """Calls the shards paid for (journal hits are free)."""
    return sum(u.requests for s in shards for u in s.usage)


def merge_runs(summaries: Iterable[ShardSummary]) -> list[ShardSummary]:
    """One summary per shard from the runs of a parent and its parts: how it stands (status,
    items, rows, failures, pending) from its last run that did work (a later `skipped` run
    found that work complete); what was spent (usage, replies) from all of them."""
    runs: dict[str, list[ShardSummary]] = {}
    for s in summaries:
        runs.setdefault(s.key, []).append(s)
    out = []
    for key_runs in runs.values():
        worked = [s for s in key_runs if s.status != "skipped"] or key_runs
        last = max(worked, key=lambda s: s.finished)
        out.append(last.model_copy(update={
            "replies": sum(s.replies for s in key_runs),
            "unparsed": sum(s.unparsed for s in key_runs),
            "waited_s": sum(s.waited_s for s in key_runs),
            "usage": [u for s in key_runs for u in s.usage]}))
    return out


T = TypeVar("T")


class Part(BaseModel):
    """A child run's share of its parent's shards: positions index, index + count, ... of the
    parent's list (interleaved, so every part spans the whole input)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="This part's number, from 0.")
    count: int = Field(ge=2, description="How many parts the parent made.")
    parent: str = Field(min_length=1, description="The parent flow run's id and run count "
                        "(`<id>-<n>`): the part's summary lands under it for the parent to read.")
    plan: str = Field(min_length=1, description="The parent's shard list (a digest): a part "
                      "that lists other shards on its worker refuses to run.")

    @model_validator(mode="after")
    def _index_in_range(self) -> Part:
        if self.index >= self.count:
            raise ValueError(f"part index {self.index} is not below count {self.count}")
        return self


class ScaleOut(BaseModel):
    """How a run spreads its shards over the work pool (docs/operations.md#scale-out)."""

    model_config = ConfigDict(extra="forbid")

    parts: int = Field(default=1, ge=1, le=64, description="Child runs of this flow's `part` "
                       "deployment to share the shards with, so that that many workers (on any "
                       "machines) work on one job; this run works through the shards from the "
                       "other end, picks up what a lost child left and publishes. 1: this run "
                       "does every shard itself.")
    part: Part | None = Field(default=None, description="Set by a parent run, not by hand: this "
                              "run does its share of the parent's shards and publishes nothing.")

    @model_validator(mode="after")
    def _one_role(self) -> ScaleOut:
        if self.part is not None and self.parts > 1:
            raise ValueError("a part run does not fan out again (parts must be 1 when part is set)")
        return self

    def share(self, items: Sequence[T]) -> list[T]:
        """The shards this run takes, in the order it takes them, from the parent's full list:
        a part's interleaved share; a parent's whole list from the end (its children start at
        the front, so they meet late); everything, in order, for a run alone."""
        if self.part is not None:
            return list(items[self.part.index::self.part.count])
        return list(reversed(items)) if self.parts > 1 else list(items)


class PartRun(BaseModel):
    """What a part run returns: the summaries of its shards (the parent reads them from the
    lake, where the part landed each as it ended, tasks/scaleout.py `land_shard`)."""

    model_config = ConfigDict(extra="forbid")

    flow: str
    part: Part
    shards: list[ShardSummary]
