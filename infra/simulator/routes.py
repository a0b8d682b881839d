"""Which kind of reply a request gets, by the ordered regex routes in routes.yaml."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, RootModel

from infra.simulator.config import Content, load_yaml, validate

ROUTES_PATH = Path(__file__).with_name("routes.yaml")


class Route(BaseModel):
    """One line of routes.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["judge", "critique", "user_turn", "translate", "list", "answer"]
    scope: Literal["last_user", "system", "prompt"]
    pattern: str
    styles: dict[str, str] = {}


class _Routes(RootModel[list[Route]]):
    pass


@dataclass(frozen=True)
class Prompt:
    """The parts of a chat request the content generators look at."""

    system: str
    last_user: str
    last_assistant: str

    @classmethod
    def of(cls, messages: list[dict]) -> Prompt:
        def text(m: dict) -> str:
            content = m.get("content") or ""
            if isinstance(content, list):  # content parts: keep the text ones
                content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)

        def last(role: str) -> str:
            return next((text(m) for m in reversed(messages) if m.get("role") == role), "")

        system = "\n".join(text(m) for m in messages if m.get("role") in ("system", "developer"))
        return cls(system, last("user"), last("assistant"))

    @property
    def text(self) -> str:
        """System messages plus the last user message: what "the prompt" means in routes."""
        return f"{self.system}\n{self.last_user}" if self.system else self.last_user

    def scope(self, name: str) -> str:
        """The text a route with this scope searches."""
        return self.text if name == "prompt" else getattr(self, name)


@dataclass(frozen=True)
class Ask:
    """Everything a content generator may use for one choice of one request."""

    prompt: Prompt
    route: Route
    match: re.Match
    rng: random.Random
    budget: int  # most tokens free-form prose may use
    content: Content
    twist: str | None = None  # a content fault: "malformed", "role_leak" or a translation fault (faults.py)


@cache
def routes() -> list[tuple[Route, re.Pattern]]:
    """routes.yaml, validated and compiled once."""
    table = validate(load_yaml(ROUTES_PATH), _Routes, str(ROUTES_PATH)).root
    return [(r, re.compile(r.pattern)) for r in table]


def classify(prompt: Prompt) -> tuple[Route, re.Match]:
    """The first route whose pattern matches its scope (the last route is the catch-all)."""
    for route, pattern in routes():
        match = pattern.search(prompt.scope(route.scope))
        if match:
            return route, match
    raise LookupError("routes.yaml needs a catch-all last route (pattern: '')")
