"""Dataset cards (README.md) for the derived sets, in the Hub's layout: YAML front matter naming
each split's Parquet file, then what the set holds and how it was made. Pure and deterministic:
the same recipe and counts give the same bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel


class Card(BaseModel):
    """What a card says."""

    title: str
    summary: str
    rule: Sequence[str]
    splits: Mapping[str, int]
    counts: Mapping[str, int]
    recipe: Mapping[str, Any]
    tags: Sequence[str] = ()


def split_path(split: str) -> str:
    """A split's Parquet file, relative to the set's folder (the Hub's `data/` layout)."""
    return f"data/{split}.parquet"


def render_card(card: Card) -> str:
    """The README.md text of a derived set."""
    front = {
        "pretty_name": card.title,
        "tags": ["ultraforge", *card.tags],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": split_path(s)} for s in card.splits]}],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {card.title}", "", card.summary, "", "## Splits", "",
             "| split | rows |", "|---|---:|"]
    lines += [f"| {s} | {n:,} |" for s, n in card.splits.items()]
    lines += ["", "## How it was built", ""]
    lines += [f"{i}. {step}" for i, step in enumerate(card.rule, start=1)]
    lines += ["", "## Counts", "", "| count | rows |", "|---|---:|"]
    lines += [f"| {k.replace('_', ' ')} | {v:,} |" for k, v in card.counts.items()]
    lines += ["", "## Recipe", "", "```yaml",
              yaml.safe_dump(dict(card.recipe), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
