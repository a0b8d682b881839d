"""Training recipes: typed SFT and DPO settings, built from the `zephyr` or `current` preset plus
overrides (docs/training.md#presets). No torch import here, so the CLI validates quickly.

Every value comes from the preset unless overridden; `dataset` and `output_dir` have no preset
value, and neither has the DPO `model` (it is the SFT run's output directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from tasks.adapters.errors import ConfigError

PresetName = Literal["zephyr", "current"]
TINY = "tiny"  # `model` value: a tiny Llama and tokenizer built from the training text

# Zephyr's template, as shipped with zephyr-7b-beta and the alignment-handbook recipes. Jinja runs
# with trim_blocks, so each message renders `<|role|>\n{content}{eos}\n` and the generation prompt
# `<|assistant|>\n`.
ZEPHYR_CHAT_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)
# The same, opening with an empty system turn when a conversation has none: the 2023 handbook
# inserted one into the data before rendering; doing it in the template leaves the rows unchanged.
ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}\n{{ '<|system|>\n' + eos_token }}\n{% endif %}\n"
    + ZEPHYR_CHAT_TEMPLATE
)

_ADAM = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}  # the Trainer defaults
_COMMON = {**_ADAM, "seed": 42, "use_cpu": False, "max_steps": -1, "bf16": True,
           "gradient_checkpointing": True}


class TrainRecipe(BaseModel):
    """Settings shared by SFT and DPO; build one with `SFTTraining.from_preset` or
    `DPOTraining.from_preset`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[Literal["sft", "dpo"]]
    PRESETS: ClassVar[dict[str, dict[str, Any]]]

    preset: PresetName = Field(description="The preset the values not overridden came from.")
    model: str = Field(description=f"'{TINY}' (a tiny Llama and tokenizer built from the training "
                                   "text, nothing downloaded), a local model directory, or a Hub id.")
    dataset: str = Field(description="The exported set: a `DatasetDict.save_to_disk` directory, or a "
                                     "directory of Parquet files per split (`<split>.parquet`, "
                                     "`<split>-*.parquet`, `<split>/*.parquet`, `data/<split>-*.parquet`).")
    train_split: str = Field(description="Split trained on.")
    eval_split: str | None = Field(description="Split evaluated at the end (and every `eval_steps`); "
                                               "None: no evaluation.")
    output_dir: str = Field(description="Where the model, tokenizer and metrics.json are written.")
    chat_template: str = Field(description="Jinja chat template set on the tokenizer and saved with it.")
    num_train_epochs: float = Field(gt=0, description="Epochs over the train split.")
    max_steps: int = Field(ge=-1, description="Optimizer steps to run; -1: run `num_train_epochs`.")
    per_device_train_batch_size: int = Field(ge=1, description="Train rows per device per step.")
    per_device_eval_batch_size: int = Field(ge=1, description="Eval rows per device per step.")
    gradient_accumulation_steps: int = Field(ge=1, description="Micro-batches per optimizer step. "
                                             "Global batch = per-device × devices × this.")
    learning_rate: float = Field(gt=0, description="Peak learning rate.")
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(ge=0, lt=1, description="Share of the steps spent warming up linearly.")
    optim: Literal["adamw_torch", "adamw_torch_fused", "rmsprop", "sgd", "adafactor"] = Field(
        description="Optimizer (a transformers `optim` name).")
    adam_beta1: float = Field(ge=0, lt=1, description="Adam β1.")
    adam_beta2: float = Field(ge=0, lt=1, description="Adam β2.")
    adam_epsilon: float = Field(gt=0, description="Adam ε.")
    max_length: int = Field(ge=16, description="Longest tokenized sequence; longer ones are cut at "
                                               "the end (SFT: the packed block length).")
    bf16: bool = Field(description="bfloat16 mixed precision.")
    gradient_checkpointing: bool = Field(description="Recompute activations to save memory.")
    logging_steps: int = Field(ge=1, description="Steps between logged losses.")
    eval_steps: int | None = Field(ge=1, description="Steps between evaluations; None: only at the end.")
    seed: int = Field(description="Seed of data order and model init.")
    use_cpu: bool = Field(description="Train on the CPU even when an accelerator is present.")

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v == 0:
            raise ValueError("0 steps trains nothing; use -1 to run num_train_epochs")
        return v

    @classmethod
    def from_preset(cls, name: str = "zephyr", overrides: Mapping[str, Any] | None = None) -> Self:
        """The preset's values with `overrides` on top, validated. Raises ConfigError naming
        every bad key (e.g. `sft recipe (preset zephyr): learning_rate: Input should be ...`)."""
        where = f"{cls.kind} recipe (preset {name})"
        if name not in cls.PRESETS:
            raise ConfigError(f"{cls.kind} recipe: preset: unknown preset {name!r} "
                              f"(known: {', '.join(cls.PRESETS)})")
        try:
            return cls.model_validate({**_COMMON, **cls.PRESETS[name], **(overrides or {}),
                                       "preset": name})
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "<root>"
                if err["type"] == "extra_forbidden":
                    problems.append(f"{key}: unknown key (allowed keys: {', '.join(cls.model_fields)})")
                else:
                    problems.append(f"{key}: {err['msg']}")
            raise ConfigError(f"{where}: " + "; ".join(problems)) from None


class SFTTraining(TrainRecipe):
    """Supervised fine-tuning on the `messages` of an ultrachat_200k-style set."""

    kind: ClassVar[Literal["sft"]] = "sft"
    # docs/training.md#presets: `zephyr` = the Oct 2023 run behind zephyr-7b-beta, `current` =
    # the alignment-handbook recipe after its Jan 2024 fix.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "zephyr": {
            "model": "mistralai/Mistral-7B-v0.1", "train_split": "train_sft", "eval_split": "test_sft",
            "chat_template": ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM,
            "num_train_epochs": 1, "learning_rate": 2e-5, "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.1, "optim": "adamw_torch",
            # 8 per device × 16 GPUs × 4 accumulated = 512 sequences of 2048 packed tokens
            "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
            "gradient_accumulation_steps": 4,
            "max_length": 2048, "packing": True, "packing_strategy": "wrapped",
            "logging_steps": 5, "eval_steps": None,
        },
        "current": {
            "model": "mistralai/Mistral-7B-v0.1", "train_split": "train_sft", "eval_split": "test_sft",
            "chat_template": ZEPHYR_CHAT_TEMPLATE,
            "num_train_epochs": 1, "learning_rate": 2e-5, "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.1, "optim": "adamw_torch",
            # 16 per device × 8 GPUs × 1 = 128 unpacked sequences
            "per_device_train_batch_size": 16, "per_device_eval_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 2048, "packing": False, "packing_strategy": "wrapped",
            "logging_steps": 5, "eval_steps": None,
        },
    }

    packing: bool = Field(description="Concatenate dialogues into blocks of `max_length` tokens.")
    packing_strategy: Literal["wrapped", "bfd", "bfd_split"] = Field(
        description="TRL packing: `wrapped` concatenates and cuts (the 2023 ConstantLengthDataset); "
                    "`bfd*` bin-pack whole dialogues (padding-free, meant for FlashAttention).")


class DPOTraining(TrainRecipe):
    """Direct preference optimisation on the chosen/rejected pairs of an
    ultrafeedback_binarized-style set, starting from an SFT model."""

    kind: ClassVar[Literal["dpo"]] = "dpo"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "zephyr": {
            "train_split": "train_prefs", "eval_split": "test_prefs",
            "chat_template": ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM,
            "num_train_epochs": 3, "learning_rate": 5e-7, "lr_scheduler_type": "linear",
            "warmup_ratio": 0.1, "optim": "rmsprop", "beta": 0.1,
            # 2 per device × 16 GPUs × 1 = 32 pairs
            "per_device_train_batch_size": 2, "per_device_eval_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_length": 1024, "max_prompt_length": 512, "logging_steps": 10, "eval_steps": 100,
        },
        "current": {
            "train_split": "train_prefs", "eval_split": "test_prefs",
            "chat_template": ZEPHYR_CHAT_TEMPLATE,
            "num_train_epochs": 1, "learning_rate": 5e-7, "lr_scheduler_type": "cosine",
            "warmup_ratio": 0.1, "optim": "adamw_torch", "beta": 0.01,
            "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
            "gradient_accumulation_steps": 2,
            "max_length": 1024, "max_prompt_length": 512, "logging_steps": 10, "eval_steps": 100,
        },
    }

    beta: float = Field(gt=0, description="DPO β: how far the policy may move from the reference.")
    max_prompt_length: int | None = Field(
        ge=1, description="When prompt + longer response exceed `max_length`, keep the prompt's "
                          "last this many tokens (TRL < 1.0 rule); None: TRL 1.16's plain cut.")

    @field_validator("max_prompt_length")
    @classmethod
    def _prompt_fits(cls, v: int | None, info: ValidationInfo) -> int | None:
        max_length = info.data.get("max_length")  # validated first: declared in the base class
        if v is not None and max_length is not None and v >= max_length:
            raise ValueError(f"must be below max_length ({max_length})")
        return v


# Overrides for a CPU smoke run (CI, the demo): small batches and blocks, a few steps, a high
# learning rate so the loss visibly moves, full precision. Add `model="tiny"` for SFT; DPO's
# model is the SFT output directory.
_CPU_SMOKE: dict[str, Any] = {
    "use_cpu": True, "bf16": False, "gradient_checkpointing": False,
    "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8,
    "gradient_accumulation_steps": 1, "logging_steps": 1, "eval_steps": None, "max_length": 256,
}
CPU_SMOKE_SFT: dict[str, Any] = {**_CPU_SMOKE, "max_steps": 20, "learning_rate": 1e-3}
CPU_SMOKE_DPO: dict[str, Any] = {**_CPU_SMOKE, "max_steps": 10, "learning_rate": 1e-4,
                                 "max_prompt_length": 128}
