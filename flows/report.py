"""Flow `report`: the warehouse as one self-contained HTML dashboard (docs/monitoring.md#report).

Reads: the warehouse file (read-only), the lake files no view covers (DPO sets, translation
flags, shard write times) and the training runs' metrics.json. Writes to the lake:
reports/<UTC time>/dashboard.html and reports/latest.html (plus a copy at `output`). Publishes a
link artifact `report` to the dashboard and a markdown summary of its sections.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from tasks.report.dashboard import ReportFiles, read_report, write_report
from tasks.reporting import publish_link, publish_summary


class ReportParams(BaseModel):
    """Where else to put the page."""

    output: str | None = Field(default=None, description="Also write the page to this local "
                                                          "file (e.g. when the lake is on S3).")


DEFAULT_PARAMS = ReportParams()


@flow(name="report")
def report(params: ReportParams = DEFAULT_PARAMS) -> ReportFiles:
    """Warehouse, lake and training runs → plots → one HTML file in the lake."""
    files = write_report(read_report(), params.output)
    publish_link("report", files.link, "ultraforge report", "The HTML dashboard of this data dir")
    publish_summary("report-summary", "\n".join([
        "# ultraforge report", "", f"Dashboard: [{files.dashboard}]({files.link})", "",
        *(f"- {title}: {'plotted' if shown else 'no data yet'}"
          for title, shown in files.plotted.items())]), {})
    return files
