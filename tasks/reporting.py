"""Run observability: Prefect progress/summary artifacts and the manifest left beside every run.

Artifacts are published only inside a Prefect run (outside one they are skipped), and are sync
calls (`_sync=True`) so they can be used from flow bodies and async task bodies alike.
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext, TaskRunContext
from pydantic import BaseModel

from tasks.adapters.resources import Resources
from tasks.console import board

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ultraforge", "prefect", "openai", "duckdb", "datasets", "s3fs", "pyarrow", "tenacity")


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx and ctx.flow_run else None


class Progress:
    """A progress artifact on the flow run graph, updated in place (one API call per update),
    and a line of the live display when stderr is a terminal (tasks/console.py)."""

    def __init__(self, title: str, total: int = 0):
        self._id: UUID | None = None
        if _in_run():
            self._id = create_progress_artifact(progress=0.0, description=title, _sync=True)
        self._board = board()
        self._line = self._board.add(title, total) if self._board is not None else None

    def update(self, done: int, total: int) -> None:
        if self._id is not None and total:
            update_progress_artifact(
                artifact_id=self._id, progress=round(100.0 * done / total, 2), _sync=True)
        if self._board is not None:
            self._board.update(self._line, done, total)


def publish_summary(key: str, markdown: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    """End-of-run summary: one markdown artifact `key` plus one table artifact per entry."""
    if not _in_run():
        return
    create_markdown_artifact(markdown=markdown, key=key, description=f"{key} summary", _sync=True)
    for name, rows in tables.items():
        if rows:
            create_table_artifact(table=rows, key=f"{key}-{name}", description=name, _sync=True)


def publish_link(key: str, link: str, text: str, description: str) -> None:
    """A link artifact `key` to a file the run made (e.g. the HTML report)."""
    if _in_run():
        create_link_artifact(link=link, link_text=text, key=key, description=description,
                             _sync=True)


def _git_sha() -> str | None:
    """The commit of the code that ran (None when not run from a git checkout, e.g. the image)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True, cwd=REPO_ROOT)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _models(res: Resources) -> dict[str, dict[str, str]]:
    """Model id → API model and endpoint URL, as configured for this run (never keys)."""
    pool = res.pool
    return {name: {"api_model": pool.api_model(name), "endpoint": spec.endpoint,
                   "base_url": pool.endpoints[spec.endpoint].base_url}
            for name, spec in sorted(pool.models.items())}


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def write_manifest(res: Resources, flow: str, recipe: BaseModel, counts: dict[str, Any]) -> str:
    """Write runs/<flow>/<run id>/manifest.json: resolved recipe, models and endpoints, versions,
    git sha, counts."""
    now = datetime.now(UTC)
    run_id = _flow_run_id() or now.strftime("%Y%m%dT%H%M%S%fZ")
    manifest = {
        "flow": flow,
        "flow_run_id": _flow_run_id(),
        "finished_at": now.isoformat(),
        "git_sha": _git_sha(),
        "python": platform.python_version(),
        "packages": _versions(),
        "recipe": recipe.model_dump(mode="json"),
        "models": _models(res),
        "counts": counts,
    }
    data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode("utf-8")
    return res.lake.write_bytes(f"runs/{flow}/{run_id}/manifest.json", data)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Render rows as a GitHub-flavoured markdown table (for summary artifacts and reports)."""
    if not rows:
        return "_none_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"
