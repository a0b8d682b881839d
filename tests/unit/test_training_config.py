"""Training recipes: the presets hold the zephyr-7b-beta / current alignment-handbook values
(docs/training.md#presets), overrides apply on top, and bad values are errors naming the key."""

from __future__ import annotations

import jinja2
import pytest

from tasks.adapters.errors import ConfigError
from tasks.training.config import (
    CPU_SMOKE_DPO,
    CPU_SMOKE_SFT,
    ZEPHYR_CHAT_TEMPLATE,
    ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM,
    DPOTraining,
    SFTTraining,
)
from tasks.training.data import truncate_pair

GIVEN = {"dataset": "exports/sets", "output_dir": "runs/out"}
ADAM = {"adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8}

SFT_FACTS = {
    "zephyr": {"learning_rate": 2e-5, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
               "num_train_epochs": 1, "per_device_train_batch_size": 8,
               "gradient_accumulation_steps": 4, "max_length": 2048, "packing": True,
               "packing_strategy": "wrapped", "optim": "adamw_torch", "bf16": True,
               "gradient_checkpointing": True, "chat_template": ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM,
               **ADAM},
    "current": {"learning_rate": 2e-5, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
                "num_train_epochs": 1, "per_device_train_batch_size": 16,
                "gradient_accumulation_steps": 1, "max_length": 2048, "packing": False,
                "optim": "adamw_torch", "bf16": True, "gradient_checkpointing": True,
                "chat_template": ZEPHYR_CHAT_TEMPLATE, **ADAM},
}
DPO_FACTS = {
    "zephyr": {"learning_rate": 5e-7, "lr_scheduler_type": "linear", "warmup_ratio": 0.1,
               "num_train_epochs": 3, "per_device_train_batch_size": 2,
               "gradient_accumulation_steps": 1, "beta": 0.1, "optim": "rmsprop",
               "max_length": 1024, "max_prompt_length": 512,
               "chat_template": ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM},
    "current": {"learning_rate": 5e-7, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
                "num_train_epochs": 1, "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 2, "beta": 0.01, "optim": "adamw_torch",
                "max_length": 1024, "max_prompt_length": 512, "bf16": True,
                "gradient_checkpointing": True, "chat_template": ZEPHYR_CHAT_TEMPLATE},
}


def render(template: str, messages: list[dict], generation_prompt: bool = False) -> str:
    """Render as transformers does (trim_blocks, lstrip_blocks); eos is Mistral's `</s>`."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, eos_token="</s>",
                                            add_generation_prompt=generation_prompt)


@pytest.mark.parametrize("preset", ["zephyr", "current"])
def test_sft_presets_hold_the_recipe_values(preset):
    recipe = SFTTraining.from_preset(preset, GIVEN)
    assert recipe.model_dump(include=set(SFT_FACTS[preset])) == SFT_FACTS[preset]
    assert (recipe.preset, recipe.model) == (preset, "mistralai/Mistral-7B-v0.1")
    assert (recipe.train_split, recipe.eval_split) == ("train_sft", "test_sft")
    assert (recipe.max_steps, recipe.seed, recipe.use_cpu) == (-1, 42, False)


@pytest.mark.parametrize("preset", ["zephyr", "current"])
def test_dpo_presets_hold_the_recipe_values(preset):
    recipe = DPOTraining.from_preset(preset, {**GIVEN, "model": "runs/sft"})
    assert recipe.model_dump(include=set(DPO_FACTS[preset])) == DPO_FACTS[preset]
    assert (recipe.train_split, recipe.eval_split) == ("train_prefs", "test_prefs")


def test_global_batches_of_the_original_runs():
    """zephyr: SFT 512 sequences on 16 GPUs, DPO 32 pairs on 16 GPUs."""
    sft = SFTTraining.from_preset("zephyr", GIVEN)
    dpo = DPOTraining.from_preset("zephyr", {**GIVEN, "model": "m"})
    assert sft.per_device_train_batch_size * 16 * sft.gradient_accumulation_steps == 512
    assert dpo.per_device_train_batch_size * 16 * dpo.gradient_accumulation_steps == 32


def test_zephyr_template_renders_as_published():
    turn = [{"role": "user", "content": "Hi?"}]
    dialogue = [*turn, {"role": "assistant", "content": "Hello."}]
    assert render(ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM, turn, generation_prompt=True) == \
        "<|system|>\n</s>\n<|user|>\nHi?</s>\n<|assistant|>\n"
    assert render(ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM, dialogue) == \
        "<|system|>\n</s>\n<|user|>\nHi?</s>\n<|assistant|>\nHello.</s>\n"
    assert render(ZEPHYR_CHAT_TEMPLATE, dialogue) == "<|user|>\nHi?</s>\n<|assistant|>\nHello.</s>\n"
    # a conversation with its own system turn gets no second one
    system = [{"role": "system", "content": "Be brief."}, *turn]
    assert render(ZEPHYR_CHAT_TEMPLATE_EMPTY_SYSTEM, system) == \
        "<|system|>\nBe brief.</s>\n<|user|>\nHi?</s>\n"


def test_overrides_apply_on_top_of_the_preset():
    recipe = SFTTraining.from_preset("zephyr", {**GIVEN, **CPU_SMOKE_SFT, "model": "tiny"})
    assert (recipe.model, recipe.max_steps, recipe.per_device_train_batch_size) == ("tiny", 20, 8)
    assert (recipe.use_cpu, recipe.bf16, recipe.learning_rate) == (True, False, 1e-3)
    assert recipe.lr_scheduler_type == "cosine"  # untouched keys keep the preset's value
    dpo = DPOTraining.from_preset("current", {**GIVEN, **CPU_SMOKE_DPO, "model": "runs/sft"})
    assert (dpo.max_length, dpo.max_prompt_length, dpo.beta) == (256, 128, 0.01)


def test_an_override_cannot_relabel_the_preset():
    assert SFTTraining.from_preset("current", {**GIVEN, "preset": "zephyr"}).preset == "current"


@pytest.mark.parametrize(("cls", "overrides", "names"), [
    (SFTTraining, {"learning_rate": 0}, ["learning_rate: Input should be greater than 0"]),
    (SFTTraining, {"max_steps": 0}, ["max_steps: Value error, 0 steps trains nothing"]),
    (SFTTraining, {"warmup_ratio": 1.5}, ["warmup_ratio: Input should be less than 1"]),
    (SFTTraining, {"lr_scheduler_type": "cosine_restarts"}, ["lr_scheduler_type: Input should be"]),
    (SFTTraining, {"lr": 1e-4}, ["lr: unknown key (allowed keys: preset, model, dataset"]),
    (SFTTraining, {"beta": 0.1}, ["beta: unknown key"]),  # a DPO key in an SFT recipe
    (DPOTraining, {"model": "m", "max_prompt_length": 1024},
     ["max_prompt_length: Value error, must be below max_length (1024)"]),
    (DPOTraining, {"beta": -1, "per_device_train_batch_size": 0},
     ["model: Field required", "beta: Input should be greater than 0",
      "per_device_train_batch_size: Input should be greater than or equal to 1"]),
])
def test_errors_name_the_key(cls, overrides, names):
    with pytest.raises(ConfigError) as err:
        cls.from_preset("zephyr", {**GIVEN, **overrides})
    message = str(err.value)
    assert message.startswith(f"{cls.kind} recipe (preset zephyr): ")
    for name in names:
        assert name in message


def test_missing_dataset_and_unknown_preset_are_named():
    with pytest.raises(ConfigError, match=r"dataset: Field required; output_dir: Field required"):
        SFTTraining.from_preset("zephyr")
    with pytest.raises(ConfigError, match=r"preset: unknown preset 'beta' \(known: zephyr, current\)"):
        SFTTraining.from_preset("beta", GIVEN)


def test_recipes_are_frozen():
    recipe = SFTTraining.from_preset("zephyr", GIVEN)
    with pytest.raises(ValueError, match="frozen"):
        recipe.max_steps = 3


def test_max_prompt_length_rule():
    """TRL < 1.0: long pairs keep the prompt's end, then responses are cut to max - max_prompt."""
    short = {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}
    assert truncate_pair(short, max_length=8, max_prompt_length=4) == short
    long_prompt = {"prompt_ids": list(range(10)), "chosen_ids": [20, 21], "rejected_ids": [30]}
    assert truncate_pair(long_prompt, max_length=8, max_prompt_length=4) == {
        "prompt_ids": [6, 7, 8, 9], "chosen_ids": [20, 21], "rejected_ids": [30]}
    long_both = {"prompt_ids": list(range(10)), "chosen_ids": list(range(20, 27)), "rejected_ids": [30]}
    assert truncate_pair(long_both, max_length=8, max_prompt_length=4) == {
        "prompt_ids": [6, 7, 8, 9], "chosen_ids": [20, 21, 22, 23], "rejected_ids": [30]}
