"""Our prompt templates (tasks/core/templates/<flow>/*.j2), rendered strictly: a missing value
raises instead of silently printing nothing."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).resolve().parent / "templates"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                              trim_blocks=True, lstrip_blocks=True,
                              auto_reload=False)  # templates are package data: no stat per render


def render(path: str, **values: object) -> str:
    """Render the template at `path` under tasks/core/templates, stripped of outer whitespace."""
    return _env().get_template(path).render(**values).strip()
