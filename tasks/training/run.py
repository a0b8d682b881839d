"""SFT and DPO runs with TRL: exported set → trainer → model, tokenizer and metrics.json.

`train_sft` / `train_dpo` are plain functions (the flows in flows/train.py call them; so can a
later pipeline). Each reads the recipe's splits, hands the exported rows to TRL (less the columns
of tasks/training/data.py), trains, evaluates, and saves into `output_dir`:
the model and tokenizer (with the chat template) and `metrics.json` (docs/training.md#outputs).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import huggingface_hub.constants
from datasets import Dataset
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Trainer, TrainerCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from tasks.training.config import TINY, DPOTraining, SFTTraining, TrainRecipe
from tasks.training.data import for_trainer, load_split, texts, truncate_pair
from tasks.training.result import METRICS_FILE, CurvePoint, TrainResult
from tasks.training.tiny import save_tiny_model

TINY_TOKENIZER_ROWS = 5_000  # rows whose text trains the tiny tokenizer


def train_sft(recipe: SFTTraining, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Fine-tune `recipe.model` on the `messages` of the SFT set's train split."""
    train, evaluation = _splits(recipe)
    with hub_access(recipe.model), _model_path(recipe, train) as model:
        args = SFTConfig(**_trainer_args(recipe), packing=recipe.packing,
                         packing_strategy=recipe.packing_strategy)
        trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                             processing_class=_tokenizer(model, recipe.chat_template),
                             callbacks=list(callbacks))
        return _run(trainer, recipe, train, evaluation)


def train_dpo(recipe: DPOTraining, callbacks: Sequence[TrainerCallback] = ()) -> TrainResult:
    """Preference-tune `recipe.model` (normally the SFT run's output directory) on the pairs of
    the DPO set's train split; the reference model is a frozen copy loaded from the same path."""
    train, evaluation = _splits(recipe)
    with hub_access(recipe.model), _model_path(recipe, train) as model:
        trainer = _DPOTrainer(model=model, args=DPOConfig(**_trainer_args(recipe), beta=recipe.beta),
                              train_dataset=train, eval_dataset=evaluation,
                              processing_class=_tokenizer(model, recipe.chat_template),
                              callbacks=list(callbacks), max_prompt_length=recipe.max_prompt_length)
        return _run(trainer, recipe, train, evaluation)


class _DPOTrainer(DPOTrainer):
    """DPOTrainer plus the TRL < 1.0 `max_prompt_length` rule, which TRL 1.16 dropped
    (`truncate_pair`, applied to the token ids TRL prepared)."""

    def __init__(self, *args: Any, max_prompt_length: int | None, **kwargs: Any):
        self._max_prompt_length = max_prompt_length  # read by _prepare_dataset during __init__
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if self._max_prompt_length is None or args.max_length is None:
            return dataset
        return dataset.map(truncate_pair, desc=f"Truncating long prompts in {dataset_name} dataset",
                           fn_kwargs={"max_length": args.max_length,
                                      "max_prompt_length": self._max_prompt_length})


def _splits(recipe: TrainRecipe) -> tuple[Dataset, Dataset | None]:
    """The train and eval splits as the trainer gets them."""
    def split(name: str) -> Dataset:
        return for_trainer(load_split(recipe.dataset, name), recipe.kind, f"{recipe.dataset}[{name}]")

    return split(recipe.train_split), split(recipe.eval_split) if recipe.eval_split else None


@contextmanager
def hub_access(model: str) -> Iterator[None]:
    """Offline for the tiny model and local directories, so nothing is looked up on the Hub; a
    Hub id leaves the environment's HF_HUB_OFFLINE as it is. huggingface_hub reads the variable
    once at import, hence its constant is set too (every Hub call checks that constant)."""
    if model != TINY and not Path(model).is_dir():
        yield
        return
    env, constant = os.environ.get("HF_HUB_OFFLINE"), huggingface_hub.constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], huggingface_hub.constants.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = constant
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


@contextmanager
def _model_path(recipe: TrainRecipe, train: Dataset) -> Iterator[str]:
    """`recipe.model`, or for `tiny` a tiny model built from the train split's text, saved in a
    temporary directory for the length of the run."""
    if recipe.model != TINY:
        yield recipe.model
        return
    with tempfile.TemporaryDirectory(prefix="ultraforge-tiny-") as tmp:
        yield str(save_tiny_model(texts(train, recipe.kind, TINY_TOKENIZER_ROWS), Path(tmp),
                                  recipe.chat_template, recipe.max_length, recipe.seed))


def _tokenizer(model: str, chat_template: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = chat_template
    return tokenizer


def _trainer_args(recipe: TrainRecipe) -> dict[str, Any]:
    """The recipe as TRL config arguments; checkpoints and trackers are off (the run saves once)."""
    evaluate_during = recipe.eval_split is not None and recipe.eval_steps is not None
    return {
        "output_dir": recipe.output_dir, "seed": recipe.seed, "use_cpu": recipe.use_cpu,
        "num_train_epochs": recipe.num_train_epochs, "max_steps": recipe.max_steps,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "per_device_eval_batch_size": recipe.per_device_eval_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "learning_rate": recipe.learning_rate, "lr_scheduler_type": recipe.lr_scheduler_type,
        "warmup_steps": recipe.warmup_ratio,  # transformers 5: a float below 1 is a ratio
        "optim": recipe.optim, "adam_beta1": recipe.adam_beta1, "adam_beta2": recipe.adam_beta2,
        "adam_epsilon": recipe.adam_epsilon, "max_length": recipe.max_length, "bf16": recipe.bf16,
        "activation_checkpointing": recipe.gradient_checkpointing,  # transformers 5's name
        "logging_steps": recipe.logging_steps,
        "eval_strategy": "steps" if evaluate_during else "no", "eval_steps": recipe.eval_steps,
        "save_strategy": "no", "report_to": [],
    }


def _run(trainer: Trainer, recipe: TrainRecipe, train: Dataset, evaluation: Dataset | None) -> TrainResult:
    """Train, evaluate, save model + tokenizer + metrics.json; return the summary."""
    output = trainer.train()
    eval_metrics = trainer.evaluate() if evaluation is not None else {}
    trainer.save_model(recipe.output_dir)  # the model and the processing class (tokenizer)
    history = trainer.state.log_history
    curve = [CurvePoint.from_log(entry) for entry in history if "loss" in entry]
    result = TrainResult(
        kind=recipe.kind, preset=recipe.preset, base_model=recipe.model, model_dir=recipe.output_dir,
        metrics_path=str(Path(recipe.output_dir) / METRICS_FILE), columns=train.column_names,
        train_rows=len(train), train_examples=len(trainer.train_dataset),
        eval_rows=len(evaluation) if evaluation is not None else 0, steps=trainer.state.global_step,
        first_loss=curve[0].loss if curve else None, last_loss=curve[-1].loss if curve else None,
        loss_curve=curve, train_metrics=_numbers(output.metrics), eval_metrics=_numbers(eval_metrics))
    metrics = {**result.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json"),
               "log_history": history}
    Path(result.metrics_path).write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    return result


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
