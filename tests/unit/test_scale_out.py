"""How a run's shards are shared between a parent run and its parts, and how their summaries
of one shard merge (tasks/core/shards.py)."""

import pytest
from pydantic import ValidationError

from tasks.core.shards import Part, ScaleOut, ShardSummary, merge_runs
from tasks.core.usage import UsageRow

SHARDS = list(range(10))


def part(index: int, count: int) -> Part:
    return Part(index=index, count=count, parent="run-1", plan="digest")


def test_parts_interleave_and_together_take_every_shard_once():
    shares = [ScaleOut(part=part(i, 3)).share(SHARDS) for i in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(s for share in shares for s in share) == SHARDS


def test_a_parent_takes_every_shard_from_the_end_and_a_run_alone_in_order():
    assert ScaleOut(parts=3).share(SHARDS) == SHARDS[::-1]
    assert ScaleOut().share(SHARDS) == SHARDS


GOOD = {"index": 0, "count": 2, "parent": "p", "plan": "d"}


@pytest.mark.parametrize(("bad", "loc"), [
    ({"part": {**GOOD, "index": 2}}, ("part",)),         # index out of range
    ({"part": {**GOOD, "count": 1}}, ("part", "count")),  # one part is no split
    ({"part": {**GOOD, "parent": ""}}, ("part", "parent")),
    ({"part": {**GOOD, "plan": ""}}, ("part", "plan")),
    ({"parts": 2, "part": GOOD}, ()),                     # a part fanning out again
    ({"parts": 0}, ("parts",)),
])
def test_a_bad_scale_is_refused_naming_the_field(bad, loc):
    with pytest.raises(ValidationError) as err:
        ScaleOut.model_validate(bad)
    assert err.value.errors()[0]["loc"] == loc


def run(key: str, status: str, finished: float, requests: int, pending: int = 0) -> ShardSummary:
    return ShardSummary(stage="s", key=key, status=status, finished=finished, pending=pending,
                        replies=requests, usage=[UsageRow(stage="s", model="m", requests=requests)])


def test_a_shard_run_by_a_part_then_by_its_parent_counts_once_as_it_ended_with_all_it_cost():
    merged = {s.key: s for s in merge_runs([
        run("a", "pending", 1.0, 5, pending=3), run("a", "done", 2.0, 3),  # part left it pending
        run("b", "done", 1.0, 7), run("b", "skipped", 2.0, 0),            # parent found it done
        run("c", "skipped", 1.0, 0)])}
    assert [merged[k].status for k in "abc"] == ["done", "done", "skipped"]
    assert merged["a"].pending == 0
    assert [sum(u.requests for u in merged[k].usage) for k in "abc"] == [8, 7, 0]
    assert [merged[k].replies for k in "abc"] == [8, 7, 0]
