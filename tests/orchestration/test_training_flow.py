"""The `sft` then `dpo` flows with the tiny model on a real Prefect API (docs/training.md).

Small exported sets in our schemas (ultrachat_200k-style SFT, ultrafeedback_binarized-style DPO)
are written to disk: the SFT set with `save_to_disk`, the DPO set as Parquet per split. The SFT
flow trains the tiny model until its loss falls; the DPO flow starts from the SFT output. Checks:
saved model, tokenizer and metrics; the rows the trainers received are the exported rows less
`prompt`; progress, markdown and table artifacts in the API.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer

from flows.train import DPOParams, SFTParams, dpo, sft
from tasks.adapters.errors import ConfigError
from tasks.core.ids import prompt_id
from tasks.training import run
from tasks.training.config import CPU_SMOKE_DPO, CPU_SMOKE_SFT, TINY

pytestmark = [pytest.mark.slow,
              # raised inside TRL's DPOTrainer on transformers 5.23; nothing of ours to change
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]

THINGS = ["sky", "sea", "grass", "snow", "coal", "sun", "rose", "lime", "plum", "sand"]
COLOURS = ["blue", "green", "white", "black", "yellow", "red", "purple", "gold"]
SFT_COLUMNS = ["prompt", "prompt_id", "messages"]
DPO_COLUMNS = ["prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"]


def dialogue(i: int) -> tuple[str, str]:
    """A short question and answer, the same for the same i."""
    thing, colour = THINGS[i % len(THINGS)], COLOURS[(i * 3) % len(COLOURS)]
    return f"What colour is the {thing} in picture {i}?", f"In picture {i} the {thing} is {colour}."


def turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def sft_rows(ids: range) -> Dataset:
    rows = []
    for i in ids:
        question, answer = dialogue(i)
        rows.append({"prompt": question, "prompt_id": prompt_id(question),
                     "messages": turns(question, answer)})
    return Dataset.from_list(rows)


def dpo_rows(ids: range) -> Dataset:
    rows = []
    for i in ids:
        question, answer = dialogue(i)
        chosen, rejected = turns(question, answer), turns(question, f"Picture {i}? No idea, sorry.")
        rows.append({"prompt": question, "prompt_id": prompt_id(question), "chosen": chosen,
                     "rejected": rejected, "messages": chosen, "score_chosen": 8.0,
                     "score_rejected": 3.5})
    return Dataset.from_list(rows)


def write_sft_set(path: Path) -> DatasetDict:
    """ultrachat_200k's splits and columns, saved with save_to_disk."""
    sets = DatasetDict({"train_sft": sft_rows(range(80)), "test_sft": sft_rows(range(80, 96)),
                        "train_gen": sft_rows(range(96, 104)), "test_gen": sft_rows(range(104, 108))})
    sets.save_to_disk(str(path))
    return sets


def write_dpo_set(path: Path) -> DatasetDict:
    """ultrafeedback_binarized's splits and columns, as `<split>.parquet` files."""
    sets = DatasetDict({"train_prefs": dpo_rows(range(64)), "test_prefs": dpo_rows(range(64, 80)),
                        "train_sft": dpo_rows(range(8)), "test_sft": dpo_rows(range(64, 72)),
                        "train_gen": dpo_rows(range(8)), "test_gen": dpo_rows(range(64, 72))})
    path.mkdir()
    for name, rows in sets.items():
        rows.to_parquet(str(path / f"{name}.parquet"))
    return sets


def artifacts(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def assert_artifacts(flow_run_id, kind: str, steps: int) -> None:
    """A finished progress artifact, the markdown summary, the loss and eval tables."""
    found = artifacts(flow_run_id)
    progress = [a for a in found if a.type == "progress"]
    assert len(progress) == 1 and progress[0].data == 100.0
    keyed = {a.key: a for a in found if a.key}
    assert set(keyed) == {f"train-{kind}", f"train-{kind}-loss", f"train-{kind}-eval"}
    assert "## Loss curve" in keyed[f"train-{kind}"].data
    loss_table = keyed[f"train-{kind}-loss"].data
    loss_table = json.loads(loss_table) if isinstance(loss_table, str) else loss_table
    assert [row["step"] for row in loss_table] == list(range(1, steps + 1))


def assert_saved(out: Path, result) -> dict:
    """Model, tokenizer (with the recipe's chat template) and metrics.json are in `out`."""
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [p["loss"] for p in metrics["loss_curve"]] == [p.loss for p in result.loss_curve]
    assert metrics["recipe"]["output_dir"] == str(out)
    assert [e["step"] for e in metrics["log_history"] if "loss" in e] == list(range(1, result.steps + 1))
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False,
                                         add_generation_prompt=True) == \
        "<|system|>\n</s>\n<|user|>\nHi?</s>\n<|assistant|>\n"
    return metrics


@pytest.fixture
def trainer_inputs(monkeypatch) -> dict[str, Dataset]:
    """The train dataset each trainer was constructed with."""
    seen: dict[str, Dataset] = {}

    def spy(name: str, base: type) -> type:
        class Spy(base):
            def __init__(self, *args, train_dataset, **kwargs):
                seen[name] = train_dataset
                super().__init__(*args, train_dataset=train_dataset, **kwargs)
        return Spy

    monkeypatch.setattr(run, "SFTTrainer", spy("sft", run.SFTTrainer))
    monkeypatch.setattr(run, "_DPOTrainer", spy("dpo", run._DPOTrainer))
    return seen


def test_sft_then_dpo_with_the_tiny_model(prefect_api, tmp_path, trainer_inputs):
    sft_set = write_sft_set(tmp_path / "ultrachat_200k")
    dpo_set = write_dpo_set(tmp_path / "ultrafeedback_binarized")
    assert sft_set["train_sft"].column_names == SFT_COLUMNS
    assert dpo_set["train_prefs"].column_names == DPO_COLUMNS

    started = time.perf_counter()
    state = sft(SFTParams(dataset=str(tmp_path / "ultrachat_200k"), output_dir=str(tmp_path / "sft"),
                          model=TINY, overrides=CPU_SMOKE_SFT), return_state=True)
    sft_wall = time.perf_counter() - started
    assert state.is_completed(), state
    result = state.result()
    assert result.steps == CPU_SMOKE_SFT["max_steps"] and len(result.loss_curve) == result.steps
    assert result.last_loss < result.first_loss, result.loss_curve
    assert result.eval_rows == 16 and "eval_loss" in result.eval_metrics
    # the trainer got the exported rows, only `prompt` dropped (tasks/training/data.py)
    given = trainer_inputs["sft"]
    assert given.column_names == ["prompt_id", "messages"] == result.columns
    assert given.to_list() == sft_set["train_sft"].remove_columns(["prompt"]).to_list()
    assert_saved(tmp_path / "sft", result)
    assert_artifacts(state.state_details.flow_run_id, "sft", result.steps)

    started = time.perf_counter()
    state = dpo(DPOParams(dataset=str(tmp_path / "ultrafeedback_binarized"),
                          output_dir=str(tmp_path / "dpo"), model=str(tmp_path / "sft"),
                          overrides=CPU_SMOKE_DPO), return_state=True)
    dpo_wall = time.perf_counter() - started
    assert state.is_completed(), state
    result = state.result()
    assert result.base_model == str(tmp_path / "sft") and result.steps == CPU_SMOKE_DPO["max_steps"]
    assert result.last_loss < result.first_loss, result.loss_curve
    assert all(p.reward_accuracy is not None and p.reward_margin is not None for p in result.loss_curve)
    assert {"eval_rewards/accuracies", "eval_rewards/margins"} <= set(result.eval_metrics)
    given = trainer_inputs["dpo"]
    assert given.column_names == DPO_COLUMNS[1:] == result.columns
    assert given.to_list() == dpo_set["train_prefs"].remove_columns(["prompt"]).to_list()
    assert result.train_examples == result.train_rows == 64  # nothing truncated away
    assert_saved(tmp_path / "dpo", result)
    assert_artifacts(state.state_details.flow_run_id, "dpo", result.steps)
    print(f"sft flow {sft_wall:.1f} s, dpo flow {dpo_wall:.1f} s")


def test_a_bad_recipe_fails_the_flow_naming_the_key(prefect_api, tmp_path):
    write_sft_set(tmp_path / "set")
    with pytest.raises(ConfigError, match=r"sft recipe \(preset current\): max_steps: Value error"):
        sft(SFTParams(preset="current", dataset=str(tmp_path / "set"), output_dir=str(tmp_path / "o"),
                      model=TINY, overrides={"max_steps": 0}))
    with pytest.raises(ConfigError, match=r"no split 'train_prefs' \(splits: train_sft, test_sft"):
        dpo(DPOParams(dataset=str(tmp_path / "set"), output_dir=str(tmp_path / "o"), model=TINY))


def test_the_tiny_model_and_local_directories_are_trained_offline(tmp_path, monkeypatch):
    """Hub look-ups are off for `tiny` and local paths, whatever the environment says; a Hub id
    leaves the setting alone (conftest turns it on for the whole suite, so undo that first)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for model in (TINY, str(tmp_path)):
        with run.hub_access(model):
            assert huggingface_hub.constants.is_offline_mode()
            assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert not huggingface_hub.constants.is_offline_mode() and "HF_HUB_OFFLINE" not in os.environ
    with run.hub_access("mistralai/Mistral-7B-v0.1"):
        assert not huggingface_hub.constants.is_offline_mode()
