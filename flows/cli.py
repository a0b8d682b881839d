"""The `ultraforge` command line: parses arguments and calls flows; errors become one line."""

from __future__ import annotations

import sys

import click

from tasks.adapters.errors import UltraforgeError


class _Group(click.Group):
    """Turns UltraforgeError into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UltraforgeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
def main() -> None:
    """ultraforge: an open data factory for LLM alignment data."""


@main.group()
def run() -> None:
    """Run one flow of the factory."""


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
