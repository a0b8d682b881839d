"""Our prompt templates (tasks/core/templates/ultrachat/*.j2), rendered with strict undefined."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "ultrachat"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False, autoescape=False)


def render(name: str, **values: object) -> str:
    """Render template `name` (without .j2); a missing value raises instead of printing nothing."""
    return _env().get_template(f"{name}.j2").render(**values).strip()
