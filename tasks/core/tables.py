"""The table registry: every lake table's name, Arrow schema and key columns, in one place.

A `TableSpec` is what the lake lands (its schema fixes column order and types, so an empty shard
still has typed columns) and what the warehouse views (one row per key: when two writers race
and land the same id twice, readers still see it once). Asking for a table or a column that is
not registered is an error naming it, never a column of nulls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa


class UnknownTableError(KeyError):
    """A table or column name that the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class TableSpec:
    """One lake table: name, schema, and the columns that identify a row (empty for logs)."""

    name: str
    schema: pa.Schema
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [k for k in self.keys if k not in self.schema.names]
        if missing:
            raise ValueError(f"table {self.name!r}: key columns {missing} are not in its schema")

    def columns(self, names: Iterable[str]) -> list[str]:
        """`names`, checked: an unknown column raises UnknownTableError naming table and column."""
        names = list(names)
        for c in names:
            if c not in self.schema.names:
                raise UnknownTableError(f"table {self.name!r} has no column {c!r} "
                                        f"(columns: {', '.join(self.schema.names)})")
        return names


class Registry:
    """Table specs by name."""

    def __init__(self, specs: Iterable[TableSpec]):
        self._specs: dict[str, TableSpec] = {}
        for s in specs:
            if s.name in self._specs:
                raise ValueError(f"table {s.name!r} registered twice")
            self._specs[s.name] = s

    def __getitem__(self, name: str) -> TableSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownTableError(f"unknown table {name!r} (known: "
                                    f"{', '.join(sorted(self._specs))})") from None

    def __iter__(self):
        return iter(self._specs.values())

    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)
