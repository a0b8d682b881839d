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
