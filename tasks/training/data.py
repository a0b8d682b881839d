"""Reading an exported set for training, and the one column TRL cannot take as exported.

Our SFT rows are `prompt, prompt_id, messages` and our DPO rows `prompt, prompt_id, chosen,
rejected, messages, score_chosen, score_rejected` (docs/datasets.md). TRL 1.16 reads any column
named `prompt` as the prompt of a prompt-completion row (SFTTrainer) or of an explicit-prompt pair
(DPOTrainer), and ours is the first user turn as a plain string: SFTTrainer then fails on the
missing `completion`, DPOTrainer on `str + list`. Without it, SFT trains on `messages` and DPO
takes the shared first turns of `chosen`/`rejected` as the prompt (TRL's implicit-prompt format),
as the alignment-handbook recipes do (docs/training.md#columns). Every other column is passed on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset, load_from_disk

from tasks.adapters.errors import ConfigError

REQUIRED_COLUMNS = {"sft": ("messages",), "dpo": ("chosen", "rejected")}
DROPPED_COLUMNS = ("prompt",)
PARQUET_PATTERNS = ("{split}.parquet", "{split}-*.parquet", "{split}/*.parquet", "data/{split}-*.parquet")


def load_split(dataset: str, split: str) -> Dataset:
    """One split of a `save_to_disk` directory, or of a directory of Parquet files per split.

    Held in memory: the trainers' `map` calls would otherwise write cache files next to the
    exported set (inside the lake's export folder) or into the user's HF cache."""
    root = Path(dataset)
    if (root / "dataset_dict.json").is_file():
        splits = load_from_disk(str(root), keep_in_memory=True)
        if split not in splits:
            raise ConfigError(f"{dataset}: no split {split!r} (splits: {', '.join(splits)})")
        return splits[split]
    if not root.is_dir():
        raise ConfigError(f"{dataset}: not a directory")
    files = sorted({str(f) for pattern in PARQUET_PATTERNS for f in root.glob(pattern.format(split=split))})
    if not files:
        raise ConfigError(f"{dataset}: no split {split!r}: neither a save_to_disk directory nor Parquet "
                          f"files matching {', '.join(p.format(split=split) for p in PARQUET_PATTERNS)}")
    return Dataset.from_parquet(files, keep_in_memory=True)


def for_trainer(rows: Dataset, kind: Literal["sft", "dpo"], where: str) -> Dataset:
    """The exported rows as the trainer gets them: all columns but DROPPED_COLUMNS."""
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in rows.column_names]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {', '.join(missing)} "
                          f"(columns: {', '.join(rows.column_names)})")
    return rows.remove_columns([c for c in DROPPED_COLUMNS if c in rows.column_names])


def texts(rows: Dataset, kind: Literal["sft", "dpo"], limit: int) -> Iterator[str]:
    """The message contents of the first `limit` rows (what the tiny tokenizer is trained on)."""
    for row in rows.select(range(min(limit, len(rows)))):
        for column in REQUIRED_COLUMNS[kind]:
            for message in row[column]:
                yield message["content"]


def truncate_pair(row: dict[str, Any], max_length: int, max_prompt_length: int) -> dict[str, Any]:
    """TRL < 1.0's rule for a tokenized pair (docs/training.md#truncation): when the prompt and the
    longer response exceed `max_length`, keep the prompt's last `max_prompt_length` tokens; if
    still too long, cut both responses to `max_length - max_prompt_length`."""
    prompt, chosen, rejected = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
    longer = max(len(chosen), len(rejected))
    if len(prompt) + longer > max_length:
        prompt = prompt[-max_prompt_length:]
    if len(prompt) + longer > max_length:
        keep = max_length - max_prompt_length
        chosen, rejected = chosen[:keep], rejected[:keep]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected}
