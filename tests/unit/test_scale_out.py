"""How a run's shards are shared between a parent run and its parts (tasks/core/shards.py)."""

import pytest
from pydantic import ValidationError

from tasks.core.shards import Part, ScaleOut

SHARDS = list(range(10))


def test_parts_interleave_and_together_take_every_shard_once():
    shares = [ScaleOut(part=Part(index=i, count=3, parent="p")).share(SHARDS) for i in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(s for share in shares for s in share) == SHARDS


def test_a_parent_takes_every_shard_from_the_end_and_a_run_alone_in_order():
    assert ScaleOut(parts=3).share(SHARDS) == SHARDS[::-1]
    assert ScaleOut().share(SHARDS) == SHARDS


@pytest.mark.parametrize("bad", [
    {"part": {"index": 3, "count": 3, "parent": "p"}},    # index out of range
    {"part": {"index": 0, "count": 1, "parent": "p"}},    # one part is no split
    {"part": {"index": 0, "count": 2, "parent": ""}},     # no parent to report to
    {"parts": 2, "part": {"index": 0, "count": 2, "parent": "p"}},  # a part fanning out again
    {"parts": 0},
])
def test_a_bad_scale_is_refused_naming_the_field(bad):
    with pytest.raises(ValidationError) as err:
        ScaleOut.model_validate(bad)
    assert ("part" in str(err.value)) or ("parts" in str(err.value))
