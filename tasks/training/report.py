"""Training observability on Prefect: a progress artifact driven by the trainer, and the end-of-run
summary (markdown with the loss curve, plus tables). Both are skipped outside a Prefect run."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tasks.reporting import Progress, markdown_table, publish_summary
from tasks.training.result import TrainResult

MAX_UPDATES = 100  # progress-artifact updates per run (each is one API call)
CURVE_ROWS = 20  # loss-curve rows shown in the markdown (the table artifact has them all)
BARS = "▁▂▃▄▅▆▇█"


class ProgressCallback(TrainerCallback):
    """Updates a Prefect progress artifact as optimizer steps complete."""

    def __init__(self, title: str):
        self._title = title
        self._progress: Progress | None = None
        self._every = 1

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs) -> None:
        self._progress = Progress(self._title)
        self._every = max(1, state.max_steps // MAX_UPDATES)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs) -> None:
        step = state.global_step
        if self._progress is not None and (step % self._every == 0 or step == state.max_steps):
            self._progress.update(step, state.max_steps)


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """`values` as one line of ▁…█ bars, at most `width` wide (evenly sampled)."""
    if not values:
        return ""
    picked = [values[round(i * (len(values) - 1) / (width - 1))] for i in range(width)] \
        if len(values) > width else list(values)
    low, high = min(picked), max(picked)
    span = (high - low) or 1.0
    return "".join(BARS[round((v - low) / span * (len(BARS) - 1))] for v in picked)


def summary_markdown(result: TrainResult) -> str:
    """The run in one page: outputs, data, loss from first to last logged step, eval metrics."""
    curve = result.loss_curve
    every = max(1, -(-len(curve) // CURVE_ROWS))
    shown = curve[::every]
    if curve and shown[-1] is not curve[-1]:
        shown.append(curve[-1])
    loss = (f"{result.first_loss:.4f} → {result.last_loss:.4f}  `{sparkline([p.loss for p in curve])}`"
            if curve else "_no step logged_")
    return "\n".join([
        f"# {result.kind.upper()} run (preset {result.preset})", "",
        f"Model and tokenizer: `{result.model_dir}` (from `{result.base_model}`); "
        f"metrics: `{result.metrics_path}`", "",
        f"Columns given to the trainer: {', '.join(f'`{c}`' for c in result.columns)}", "",
        f"Rows: train {result.train_rows} ({result.train_examples} examples after TRL's "
        f"preparation), eval {result.eval_rows}; steps: {result.steps}", "",
        f"Loss: {loss}", "",
        "## Eval metrics", markdown_table(_metric_rows(result.eval_metrics)),
        "## Train metrics", markdown_table(_metric_rows(result.train_metrics)),
        f"## Loss curve ({len(shown)} of {len(curve)} logged steps)",
        markdown_table([{k: f"{v:.4g}" if isinstance(v, float) else v
                         for k, v in p.model_dump(exclude_none=True).items()} for p in shown]),
    ])


def publish_training(result: TrainResult) -> None:
    """Markdown artifact `train-<kind>` and tables `train-<kind>-loss` / `-eval`."""
    publish_summary(f"train-{result.kind}", summary_markdown(result), {
        "loss": [p.model_dump(exclude_none=True) for p in result.loss_curve],
        "eval": _metric_rows(result.eval_metrics),
    })


def _metric_rows(metrics: dict[str, float]) -> list[dict[str, object]]:
    return [{"metric": k, "value": round(v, 6)} for k, v in metrics.items()]
