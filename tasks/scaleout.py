"""Scale-out on Prefect's own machinery: a run's shards shared with child deployment runs on the
work pool, so that N workers on N machines work on one job (docs/operations.md#scale-out).

A run with `scale.parts = N > 1` (the parent), once what its shards read has landed, starts N
runs of its flow's `part` deployment (`<flow>/part`) with the same parameters and
`scale.part = (i, N, parent, plan)`. Each part lists the shards again, refuses to run if its
list is not the parent's (`plan`), takes every N-th shard from position i, lands them as any
run does, and lands each shard's summary as the shard ends, under
`runs/<flow>/<parent>/parts/<i, 3 digits>/`, so that the parent counts it even if the part is
lost. Meanwhile the
parent works through the whole list from the other end. Shard leases (tasks/shards.py) make
sure no shard is paid twice, and the journal segments in the lake make a shard taken over from
a lost worker repay only the last few seconds of its calls.

So the parent ends only when every shard has landed, whether the parts finished, failed, never
started or were lost with their worker: a lost part's lease expires and the parent takes its
shard over. Then the parent settles its children (cancels those not started, marks those whose
worker stopped answering Crashed) and merges the parts' summaries into its own (`run_shared`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run as this_run
from prefect.states import Cancelled, Crashed
from pydantic import BaseModel, ConfigDict, ValidationError

from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake
from tasks.adapters.resources import current
from tasks.core.ids import content_key
from tasks.core.shards import Part, PartRun, ScaleOut, ShardSummary, merge_runs, paid_requests
from tasks.reporting import publish_summary
from tasks.shards import run_shards

SETTLE_POLL_S = 1.0
T = TypeVar("T")


class ChildRun(BaseModel):
    """A part run as its parent last saw it."""

    model_config = ConfigDict(extra="forbid")

    index: int
    id: str
    name: str
    state: str
    shards: int = 0
    requests_paid: int = 0


@dataclass
class Shared:
    """A run's shards as `run_shared` left them: a part's landed summary (`part`), or the
    parent's (or lone run's) summaries, one per shard with its parts' runs merged in, and how
    its parts ended."""

    shards: list[ShardSummary]
    children: list[ChildRun]
    part: PartRun | None = None


def run_shared(flow: str, params: BaseModel, scale: ScaleOut, plan: str, items: Sequence[T],
               submit: Callable[[T], Any], limit: int, title: str,
               todo: Callable[[T], bool] | None = None,
               before_parts: Callable[[], ShardSummary] | None = None) -> Shared:
    """Run a flow's shards as `scale` says: the whole list `items` (whose digest is `plan`)
    alone, or shared with parts. `submit` submits the shard task of one item; `todo` leaves out
    items known to be done (after sharing, so parent and parts share the same list);
    `before_parts` is a parent's step between its checks and its parts' start (`fan_out`)."""
    lake = current().lake
    with fan_out(flow, params, scale, plan, before_parts) as fan:
        mine = [i for i in scale.share(items) if todo is None or todo(i)]
        # a part lands each shard's summary as it ends: the parent counts them even if the
        # part is lost later
        landed = None if scale.part is None else partial(land_shard, lake, flow, scale.part)
        shards = run_shards([partial(submit, i) for i in mine], limit, title, landed)
    if scale.part is not None:
        return Shared(shards, [], end_part(flow, scale.part, shards))
    theirs, children = fan.settle(lake)
    return Shared(merge_runs([*fan.first, *shards, *theirs]), children)


def part_dir(flow: str, parent: str, index: int) -> str:
    return f"runs/{flow}/{parent}/parts/{index:03d}"


def land_shard(lake: Lake, flow: str, part: Part, shard: ShardSummary) -> None:
    """One shard's summary, landed by the part that ran it, for its parent. A shard found
    landed already (`skipped`) is left out: it spent nothing, and a retried part would write it
    over the summary of the run that paid. A failed write loses the parent a count, not the
    shard: it is logged, not raised."""
    if shard.status == "skipped":
        return
    try:
        lake.write_bytes(f"{part_dir(flow, part.parent, part.index)}/{shard.key}.json",
                         shard.model_dump_json().encode())
    except Exception as exc:  # noqa: BLE001 - the shard itself has landed
        get_run_logger().warning("shard %s: its summary did not land for the parent run (%s)",
                                 shard.key, exc)


def read_part(lake: Lake, flow: str, parent: str, index: int) -> list[ShardSummary]:
    """The summaries of the shards a part ran and landed (whether it ended or was lost)."""
    where = part_dir(flow, parent, index)
    out = []
    for name in lake.ls(where):
        try:
            out.append(ShardSummary.model_validate_json(lake.read_bytes(f"{where}/{name}")))
        except ValidationError as exc:
            raise ConfigError(f"{where}/{name}: not a shard summary ({exc})") from None
    return out


def end_part(flow: str, part: Part, shards: list[ShardSummary]) -> PartRun:
    """A part's end: its summary artifact, and what it returns."""
    paid = paid_requests(shards)
    publish_summary(f"{flow}-part-summary", "\n".join([
        f"# {flow}: part {part.index + 1} of {part.count}", "",
        f"Parent run: `{part.parent}`", "",
        f"Shards: {len(shards)} ({sum(s.status != 'skipped' for s in shards)} run, the rest "
        f"landed already), paid calls: {paid}"]), {})
    return PartRun(flow=flow, part=part, shards=shards)


class Fan:
    """A run's children (none for a run alone or a part). As a context manager around the
    run's shards: if the run fails, its children are cancelled rather than left to work for a
    job that has failed."""

    def __init__(self, flow: str, parent: str | None = None,
                 children: list[FlowRun] | None = None, first: list[ShardSummary] | None = None):
        self.flow = flow
        self.parent = parent
        self.children = children or []
        self.first = first or []  # what the parent's step before its parts ran

    def __enter__(self) -> Fan:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is not None and self.children:
            with get_client(sync_client=True) as client:
                for child in self.children:
                    client.set_flow_run_state(child.id, Cancelled(
                        message=f"the parent run failed: {type(error).__name__}"))

    def settle(self, lake: Lake) -> tuple[list[ShardSummary], list[ChildRun]]:
        """After the parent's own pass (every shard landed): the children brought to an end,
        the summaries of the shards they ran, and how each ended."""
        if not self.children:
            return [], []
        logger = get_run_logger()
        shards: list[ShardSummary] = []
        seen: list[ChildRun] = []
        for i, run in enumerate(_settle(self.children, current().settings.part_grace_s)):
            child = ChildRun(index=i, id=str(run.id), name=run.name,
                             state=run.state.name if run.state else "?")
            theirs = read_part(lake, self.flow, self.parent, i)
            shards += theirs
            child.shards = len(theirs)  # (a skipped shard's summary is not landed)
            child.requests_paid = paid_requests(theirs)
            if run.state is None or run.state.type not in (StateType.COMPLETED, StateType.CANCELLED):
                logger.warning("%s part %d (%s) ended %s after %d shards: the parent did the "
                               "rest", self.flow, i + 1, run.name, child.state, child.shards)
            seen.append(child)
        return shards, seen


def fan_out(flow: str, params: BaseModel, scale: ScaleOut, plan: str,
            before_parts: Callable[[], ShardSummary] | None = None) -> Fan:
    """Start the children `scale` asks for: runs of `<flow>/part` with `params`, each its part
    of the shard list `plan` identifies (a digest of it). A part checks that it lists the same
    shards as its parent did: its inputs could differ on its worker (other files, another pool),
    and a share of another list would leave shards undone and count others twice. A parent
    runs `before_parts` once its parts are known to be possible, before it starts them."""
    if scale.part is not None:
        if scale.part.plan != plan:
            raise ConfigError(f"part {scale.part.index + 1} of {scale.part.count}: this worker "
                              f"plans other shards ({plan[:12]}) than the parent did "
                              f"({scale.part.plan[:12]}); are its inputs and pool the same?")
        return Fan(flow)
    if scale.parts <= 1:
        return Fan(flow)
    deployment = f"{flow}/part"
    if this_run.id is None:
        raise ConfigError(f"scale.parts={scale.parts}: only a flow run can start parts")
    # a retried run (same id, next run count) starts parts of its own
    parent = f"{this_run.id}-{this_run.run_count}"
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ConfigError(f"scale.parts={scale.parts} needs the deployment {deployment!r} "
                              "on the Prefect API (`ultraforge deploy` registers it)") from None
    first = [before_parts()] if before_parts is not None else []
    # every call this run has paid so far, in the lake before a part starts (each imports the
    # journal segments when its process starts): what the parent translated a moment ago, for
    # one, is no part's to pay again
    if (mirror := current().mirror) is not None:
        mirror.flush()
    children = []
    for i in range(scale.parts):
        part = Part(index=i, count=scale.parts, parent=parent, plan=plan)
        child: dict[str, Any] = params.model_copy(
            update={"scale": ScaleOut(part=part)}).model_dump(mode="json")
        children.append(run_deployment(
            deployment, parameters={"params": child}, timeout=0, as_subflow=True,
            flow_run_name=f"{this_run.name}-part-{i + 1}-of-{scale.parts}",
            idempotency_key=f"{parent}-part-{i}", tags=["ultraforge", "part"]))
    get_run_logger().info("%s: %d parts started on the work pool", flow, scale.parts)
    return Fan(flow, parent, children, first)


def plan_id(*parts: Any) -> str:
    """A digest of what identifies a run's shard list (input key, shard ids, fingerprint)."""
    return content_key("scaleout/plan", *parts)


def _settle(children: list[FlowRun], grace_s: float) -> list[FlowRun]:
    """Bring the children to a final state once every shard has landed: those not started are
    cancelled (nothing is left for them); those running have nothing left to pay for and get
    `grace_s` to end, then are marked Crashed (their worker is gone, or they hang). Proposed,
    not forced: the server refuses either to a run that has just ended (and a part that starts
    all the same finds every shard landed). Their final flow runs, in order."""
    deadline = time.monotonic() + grace_s
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(c.id) for c in children]
            running = False
            for run in runs:
                kind = run.state.type if run.state else StateType.SCHEDULED
                if kind in (StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
                    client.set_flow_run_state(run.id, Cancelled(
                        message="not needed: the parent run did its shards"))
                    running = True
                elif not run.state.is_final():
                    running = True
            if not running:
                return runs
            if time.monotonic() > deadline:
                for run in runs:
                    if run.state and not run.state.is_final():
                        client.set_flow_run_state(run.id, Crashed(
                            message=f"no end {grace_s:g} s after every shard had landed: "
                            "its worker is presumed lost; the parent run did its shards"))
                return [client.read_flow_run(c.id) for c in children]
            time.sleep(SETTLE_POLL_S)
