"""Read what the report shows, and land the page (docs/monitoring.md#report).

Reads: the warehouse file read-only (its views; an in-memory DuckDB over the lake when there is
no file yet), lake files no view covers (the DPO sets' preference splits, the translations'
flags.jsonl, the shards' write times), and `<data dir>/models/*/metrics.json` of the training
runs. Writes: `reports/<UTC time>/dashboard.html` and `reports/latest.html` in the lake, and a
copy at `output` when one is given.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field, ValidationError

from tasks.adapters.errors import UltraforgeError
from tasks.adapters.lake import Lake
from tasks.adapters.resources import current
from tasks.adapters.warehouse import Warehouse
from tasks.core.report import sql
from tasks.core.report.figures import sections
from tasks.core.report.page import render
from tasks.core.report.rows import (
    FlagCount,
    Landed,
    LossCurve,
    MarginCount,
    ModelPicks,
    RatingCount,
    ReportData,
    RoundCount,
    StopCount,
    TableCount,
)
from tasks.core.usage import UsageRow
from tasks.training.result import METRICS_FILE, TrainResult

M = TypeVar("M", bound=BaseModel)
LATEST = "reports/latest.html"
# Tables whose shards' write times place their calls in time, and the query of each.
LANDED = {**dict.fromkeys(sql.USAGE_VIEWS, sql.landed_usage_sql),
          "uf_completions": sql.landed_retries_sql}


class ReportFiles(BaseModel):
    """Where one report landed."""

    dashboard: str = Field(description="reports/<UTC time>/dashboard.html in the lake.")
    latest: str = Field(description="reports/latest.html in the lake (the newest report).")
    output: str | None = Field(default=None, description="The copy asked for with `output`.")
    link: str = Field(description="The dashboard as a URL to open (file:// for a local lake).")
    plotted: dict[str, bool] = Field(description="Section title → whether it has a plot (else "
                                                 "it says there is no data yet).")


def typed(model: type[M], rows: list[dict[str, Any]], source: str) -> list[M]:
    """`rows` as `model`s; a row that does not fit is an error naming the source, row and field."""
    return [_validated(model, row, f"{source}: row {i}") for i, row in enumerate(rows)]


def _validated(model: type[M], record: dict[str, Any], where: str) -> M:
    try:
        return model.model_validate(record)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "<record>"
        # a missing field's input is the whole record: not worth printing
        got = "" if err["type"] == "missing" else f" (got {_short(err.get('input'))})"
        raise UltraforgeError(f"{where}: {field}: {err['msg']}{got}") from None


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _files(wh: Warehouse, glob: str) -> int:
    return wh.query(sql.files_sql(glob))[0]["files"]


def _read_warehouse(wh: Warehouse, lake: Lake, data: ReportData) -> None:
    """Fill `data` from the views `wh` has and the lake files no view covers."""
    views = sorted(r["view_name"] for r in wh.query(
        "SELECT view_name FROM duckdb_views() WHERE NOT internal AND schema_name = 'main'"))
    if views:
        data.tables = typed(TableCount, wh.query(sql.counts_sql(views)), "warehouse views")
    for view in sql.USAGE_VIEWS:
        if view in views:
            data.usage += typed(UsageRow, wh.query(sql.usage_sql(view)), view)
    for table, query in LANDED.items():
        if _files(wh, lake.glob(table)):
            data.landed += typed(Landed, wh.query(query(lake.glob(table))), f"{table} shards")
    if "uf_annotations" in views:
        data.ratings = typed(RatingCount, wh.query(sql.RATINGS_SQL), "uf_annotations")
    if "ultrachat_dialogues" in views:
        data.rounds = typed(RoundCount, wh.query(sql.ROUNDS_SQL), "ultrachat_dialogues")
        data.stops = typed(StopCount, wh.query(sql.STOPS_SQL), "ultrachat_dialogues")
    pairs = lake.url(sql.DPO_PAIRS)
    if _files(wh, pairs):
        data.margins = typed(MarginCount, wh.query(sql.margins_sql(pairs)), pairs)
        if "uf_completions" in views:
            data.picks = typed(ModelPicks, wh.query(sql.picks_sql(pairs)), pairs)
    flags = lake.url(sql.TRANSLATION_FLAGS)
    data.translated_sets = _files(wh, flags)
    if data.translated_sets:
        data.flags = typed(FlagCount, wh.query(sql.flags_sql(flags)), flags)


def loss_curves(models_dir: Path) -> list[LossCurve]:
    """The loss curve of every training run under `models_dir` (`<run>/metrics.json`)."""
    curves = []
    for path in sorted(models_dir.glob(f"*/{METRICS_FILE}")):
        result = _validated(TrainResult, _json(path), str(path))
        curves.append(LossCurve(run=f"{result.kind} ({path.parent.name})",
                                steps=[p.step for p in result.loss_curve],
                                loss=[p.loss for p in result.loss_curve],
                                eval_loss=result.eval_metrics.get("eval_loss")))
    return curves


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UltraforgeError(f"{path}: not readable as JSON: {exc}") from None


@task(name="report-read", cache_policy=NO_CACHE)
def read_report() -> ReportData:
    """What the report shows, from this data dir's warehouse, lake and training runs."""
    res = current()
    settings = res.settings
    file = settings.warehouse if settings.warehouse.exists() else None
    data = ReportData(generated_at=datetime.now(UTC), lake=res.lake.root,
                      warehouse=str(file) if file else None,
                      endpoint_of={m: spec.endpoint for m, spec in res.pool.models.items()})
    with (res.warehouse(read_only=True) if file else res.lake_db()) as wh:
        _read_warehouse(wh, res.lake, data)
    data.training = loss_curves(settings.data_dir.resolve() / "models")
    return data


@task(name="report-write", cache_policy=NO_CACHE)
def write_report(data: ReportData, output: str | None = None) -> ReportFiles:
    """Render the page; land it as this run's dashboard and as the latest; copy it to `output`."""
    shown = sections(data)
    page = render(data, shown).encode("utf-8")
    lake = current().lake
    dashboard = lake.write_bytes(f"reports/{data.generated_at:%Y%m%dT%H%M%SZ}/dashboard.html", page)
    files = ReportFiles(dashboard=dashboard, latest=lake.write_bytes(LATEST, page),
                        link=Path(dashboard).as_uri() if lake.is_local else dashboard,
                        plotted={s.title: s.figure is not None for s in shown})
    if output is not None:
        path = Path(output).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(page)
        files.output = str(path)
    return files
