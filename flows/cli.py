"""The `ultraforge` command line: parses arguments and calls flows; errors become one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from tasks.adapters.errors import ConfigError, UltraforgeError


class _OneLineForOurErrors(logging.Filter):
    """Prefect logs a failed run's exception with its traceback; for our classified errors (bad
    config, quota, fatal endpoint replies) the message is the whole story, so drop the trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UltraforgeError):
            record.exc_info = record.exc_text = None
        return True


class _NotOnConsole(logging.Filter):
    """Prefect's ERROR records (a failed task, a failed flow run, each with the same error) stay
    off the console: the CLI prints the one line that matters, the log file keeps them all."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.name.startswith("prefect"))


class _LogFile(logging.FileHandler):
    """The run's log file; counts the errors it received."""

    error_count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.error_count += record.levelno >= logging.ERROR
        super().emit(record)


@contextmanager
def _log_to_file() -> Iterator[_LogFile]:
    """For the block: everything Prefect logs at INFO and above also goes to
    `<data dir>/logs/ultraforge.log`, and its errors stay off the console."""
    from prefect.logging.configuration import setup_logging

    from tasks.adapters.settings import Settings

    setup_logging()  # Prefect's own set-up first (else its first flow run would replace ours)
    path = Settings().data_dir.resolve() / "logs" / "ultraforge.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, quiet = logging.getLogger(), _NotOnConsole()
    consoles = [h for h in root.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    root.addHandler(handler)
    for h in consoles:
        h.addFilter(quiet)
    try:
        yield handler
    finally:
        for h in consoles:
            h.removeFilter(quiet)
        root.removeHandler(handler)
        handler.close()


class _Group(click.Group):
    """Turns UltraforgeError into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context):
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).addFilter(_OneLineForOurErrors())
        with _log_to_file() as log:
            try:
                return super().invoke(ctx)
            except UltraforgeError as exc:
                details = f" (details: {log.baseFilename})" if log.error_count else ""
                click.echo(f"error: {exc}{details}", err=True)
                sys.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """ultraforge: an open data factory for LLM alignment data."""


@main.group()
def run() -> None:
    """Run one flow of the factory."""


def recipe_options(flow: str, example: str, dry_run_help: str | None = None) -> Callable:
    """The options of a command that runs a recipe: --recipe, repeatable --set, and --dry-run
    when the flow has one."""
    def decorate(command: Callable) -> Callable:
        options = [
            click.option("--recipe", type=click.Path(dir_okay=False), default=None,
                         help=f"Recipe YAML (default: flows/recipes/{flow}.yaml)."),
            click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help=f"Override a recipe value, e.g. {example}."),
        ]
        if dry_run_help is not None:
            options.append(click.option("--dry-run", is_flag=True, help=dry_run_help))
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


@run.command("ultrachat")
@recipe_options("ultrachat", "sectors.world.dialogues=500",
                "Print the resolved recipe and planned counts.")
def run_ultrachat(recipe: str | None, overrides: tuple[str, ...], dry_run: bool) -> None:
    """UltraChat: openings in three sectors → user-simulator ⇄ assistant dialogues → export."""
    import json

    from flows.ultrachat import UltraChatParams, plan, ultrachat

    params = UltraChatParams(**({"recipe": recipe} if recipe else {}), overrides=list(overrides))
    out = plan(params) if dry_run else {k: v for k, v in ultrachat(params).items() if k != "tables"}
    click.echo(json.dumps(out, indent=2, default=str))


@run.command("ultrafeedback")
@recipe_options("ultrafeedback", "plan.n_models=2",
                "Print planned counts, landed vs new calls, and estimated tokens/cost.")
def run_ultrafeedback(recipe: str | None, overrides: tuple[str, ...], dry_run: bool) -> None:
    """UltraFeedback: prompts → 4 of N models → judge + critique → lake → raw export."""
    import json

    from flows.ultrafeedback import UltraFeedbackParams, resolve_recipe, ultrafeedback
    from flows.ultrafeedback import dry_run as estimate

    params = UltraFeedbackParams(**({"recipe": recipe} if recipe else {}), overrides=list(overrides))
    resolve_recipe(params)  # a config error is one line here, not a failed flow run
    if dry_run:
        click.echo(json.dumps(estimate(params), indent=2, default=str))
        return
    out = ultrafeedback(params)
    click.echo(out.model_dump_json(indent=2))
    if out.counts.partial:
        sys.exit(2)  # partial: some calls failed for good (counts printed above); rerun retries


@main.group()
def export() -> None:
    """Build a derived set from what the raw flows landed."""


@export.command("sft")
@recipe_options("sft", "min_rounds=2")
def export_sft(recipe: str | None, overrides: tuple[str, ...]) -> None:
    """SFT dialogues (ultrachat_200k shape) from the UltraChat messages export."""
    from flows.derived import SFTExportParams, sft_export

    # a config error is one line here, not a failed flow run
    params = SFTExportParams(**({"recipe": recipe} if recipe else {}), overrides=list(overrides))
    click.echo(sft_export(params).model_dump_json(indent=2))


@export.command("dpo")
@recipe_options("dpo", "preset=zephyr")
def export_dpo(recipe: str | None, overrides: tuple[str, ...]) -> None:
    """Chosen/rejected pairs (ultrafeedback_binarized shape) from the raw UltraFeedback export."""
    from flows.derived import DPOExportParams, dpo_export

    params = DPOExportParams(**({"recipe": recipe} if recipe else {}), overrides=list(overrides))
    click.echo(dpo_export(params).model_dump_json(indent=2))


@main.command("translate")
@click.option("--set", "set_", required=True,
              type=click.Choice(["ultrachat", "ultrafeedback", "sft", "dpo"]),
              help="The set: a raw export (ultrachat, ultrafeedback) or a derived set (sft, dpo).")
@click.option("--lang", default="ja", show_default=True, help="Target language code.")
@click.option("--recipe", type=click.Path(dir_okay=False), default=None,
              help="Recipe YAML (default: flows/recipes/translate.yaml).")
@click.option("--param", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value, e.g. limit=50 or translation.route=batch.")
@click.option("--dry-run", is_flag=True, help="Print chunks, tokens and the cost of each route.")
def translate(set_: str, lang: str, recipe: str | None, overrides: tuple[str, ...],
              dry_run: bool) -> None:
    """A set in another language: text fields translated, ids, ratings, scores and splits kept."""
    import json

    from flows.translate import TranslateParams
    from flows.translate import dry_run as estimate
    from flows.translate import translate as translate_flow

    params = TranslateParams(set=set_, lang=lang, **({"recipe": recipe} if recipe else {}),
                             overrides=list(overrides))
    if dry_run:  # (a config error was one line above, not a failed flow run)
        click.echo(json.dumps(estimate(params), indent=2))
    else:
        click.echo(translate_flow(params).model_dump_json(indent=2))


@main.group()
def train() -> None:
    """Train on an exported set with TRL (needs the `train` extra)."""


def _train_options(kind: str, model_help: str) -> Callable:
    def decorate(command: Callable) -> Callable:
        for option in reversed((
            click.option("--preset", type=click.Choice(["zephyr", "current"]), default="zephyr",
                         show_default=True, help="zephyr-7b-beta's recipe or the current one."),
            click.option("--dataset", default=None, help=f"The exported set: a save_to_disk "
                         f"directory or Parquet per split (default: the lake's {kind} export)."),
            click.option("--model", default=None, help=model_help),
            click.option("--output", default=None,
                         help=f"Model output directory (default: <data dir>/models/{kind})."),
            click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                         help="Override a training value, e.g. max_steps=20."),
        )):
            command = option(command)
        return command
    return decorate


@train.command("sft")
@_train_options("sft", "`tiny`, a local model directory or a Hub id (default: the preset's).")
def train_sft(preset: str, dataset: str | None, model: str | None, output: str | None,
              overrides: tuple[str, ...]) -> None:
    """SFT on the SFT set (train_sft / test_sft)."""
    from flows.train import SFTParams, sft
    from tasks.core.yamlconf import apply_overrides

    params = SFTParams(preset=preset, dataset=dataset or _default_set("sft"),
                       output_dir=output or _models_dir("sft"), model=model,
                       overrides=apply_overrides({}, list(overrides)))
    params.load()  # a bad value is one line here, not a failed flow run
    click.echo(sft(params).model_dump_json(indent=2))


@train.command("dpo")
@_train_options("dpo", "The SFT model to start from (default: <data dir>/models/sft).")
def train_dpo(preset: str, dataset: str | None, model: str | None, output: str | None,
              overrides: tuple[str, ...]) -> None:
    """DPO on the DPO set (train_prefs / test_prefs), from the SFT flow's model."""
    from flows.train import DPOParams, dpo
    from tasks.core.yamlconf import apply_overrides

    params = DPOParams(preset=preset, dataset=dataset or _default_set("dpo"),
                       output_dir=output or _models_dir("dpo"), model=model or _models_dir("sft"),
                       overrides=apply_overrides({}, list(overrides)))
    params.load()
    click.echo(dpo(params).model_dump_json(indent=2))


def _default_set(kind: str) -> str:
    from tasks.adapters.lake import Lake
    from tasks.adapters.settings import Settings
    from tasks.core.derived.binarize import DPORecipe
    from tasks.core.derived.sft import SFTRecipe
    from tasks.derived.publish import dataset_dict_path

    name = (SFTRecipe() if kind == "sft" else DPORecipe()).name
    lake = Lake.from_settings(Settings())
    if not lake.is_local:
        raise ConfigError(f"the lake is {lake.url('')}: training reads a local copy of the set; "
                          f"pass --dataset (e.g. a download of {dataset_dict_path(kind, name)})")
    return lake.url(dataset_dict_path(kind, name))


def _models_dir(kind: str) -> str:
    from tasks.adapters.settings import Settings

    return str(Settings().data_dir.resolve() / "models" / kind)


@main.command("report")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the page here (it always lands in the lake under reports/).")
def report(output: str | None) -> None:
    """An offline HTML dashboard of the warehouse: throughput, cost, ratings, pairs, training."""
    from flows.report import ReportParams
    from flows.report import report as report_flow

    click.echo(report_flow(ReportParams(output=output)).model_dump_json(indent=2))


@main.command("deploy")
@click.option("--pool", default="ultraforge", show_default=True, help="The process work pool.")
def deploy(pool: str) -> None:
    """Register the work pool (its job template from infra/worker/process-pool.json) and every
    deployment of prefect.yaml against PREFECT_API_URL."""
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    prefect = str(Path(sys.executable).parent / "prefect")
    # the pull step's working directory: where workers find this repository (/app in the image)
    env = {**os.environ, "ULTRAFORGE_APP_DIR": os.environ.get("ULTRAFORGE_APP_DIR") or str(repo)}
    steps = [[prefect, "work-pool", "create", pool, "--type", "process", "--overwrite",
              "--base-job-template", str(repo / "infra/worker/process-pool.json")],
             [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(repo / "prefect.yaml")]]
    for argv in steps:
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode:
            raise UltraforgeError(f"{' '.join(argv[1:4])} failed: "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
    click.echo(f"work pool {pool!r} and the deployments of prefect.yaml are registered at "
               f"{os.environ.get('PREFECT_API_URL', '(PREFECT_API_URL unset)')}")


@main.command()
@click.option("--preset", default="tier3", show_default=True,
              help="tier1..tier5 (approximate OpenAI tiers), vllm, unlimited.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=int)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a setting, e.g. faults.rate_429=0.05 or limits.rpm=6000.")
def sim(preset: str, host: str, port: int, seed: int, overrides: tuple[str, ...]) -> None:
    """Serve the OpenAI-compatible simulator until interrupted."""
    from infra.simulator.server import serve

    serve(preset=preset, host=host, port=port, seed=seed, overrides=list(overrides))


@main.command()
@click.option("--preset", default="tier5", show_default=True, help="Simulator preset to run against.")
@click.option("--seed", default=0, show_default=True, type=int, help="Simulator seed.")
@click.option("--train", is_flag=True, help="Also train the tiny model: SFT, then DPO (CPU).")
def demo(preset: str, seed: int, train: bool) -> None:
    """Run the whole factory on bundled data against the bundled simulator."""
    import os

    from flows.demo import run_demo

    # the demo's temporary Prefect server sends no usage telemetry (nothing leaves this machine;
    # its heartbeat also raced the server's SQLite file at start-up: "database is locked")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    out = run_demo(preset=preset, seed=seed, train=train)
    uf, uc, sim = out["ultrafeedback"], out["ultrachat"], out["simulator"]
    ufc = uf.counts
    cost = sum(row.cost_usd for row in uf.usage) + sum(
        row["cost_usd"] for row in uc["tables"]["usage-by-role"])
    click.echo(f"""
ultraforge demo finished
  lake        {out['lake']}
  warehouse   {out['warehouse']}   (DuckDB: views over the lake)
  journal     {out['journal']}   (rerun the demo: nothing is paid twice)
  ultrafeedback  {ufc.exported_prompts} prompts, {ufc.exported_completions} completions, \
{ufc.aspect_ratings_parsed}/{ufc.aspect_ratings} aspect ratings parsed
    {uf.jsonl}
    {uf.parquet}
  ultrachat      {uc['exported']} dialogues kept of {uc['dialogues']} ({uc['rejected']} rejected)
    {uc['exports']['raw_jsonl']}
    {uc['exports']['messages_parquet']}
  sft set        {_splits(out['sft_set'])}
    {out['sft_set'].published.folder}
  dpo set        {_splits(out['dpo_set'])}
    {out['dpo_set'].published.folder}
  japanese       {_japanese(out['japanese'])}
  simulator   {sim['requests']} HTTP requests, {sim['ok_repeats']} repeated paid calls, \
simulated spend ${cost:.2f}""")
    for kind in ("sft", "dpo") if train else ():
        run = out[f"{kind}_train"]
        click.echo(f"  {kind} training   {run.steps} steps, loss {run.first_loss:.3f} → "
                   f"{run.last_loss:.3f}\n    {run.model_dir}")


def _japanese(sets: dict) -> str:
    lines = [f"\n    {kind}: {t.counts.records_written} records ({t.counts.calls_paid} calls, "
             f"{t.counts.records_flagged} flagged)\n      {t.folder}" for kind, t in sets.items()]
    return "(first 5 records of each split)" + "".join(lines)


def _splits(export) -> str:
    return ", ".join(f"{split} {rows}" for split, rows in export.published.rows.items())
