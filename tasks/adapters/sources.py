"""Record sources: Hugging Face datasets and local JSON/JSONL/Parquet/CSV files, row by row.

`read_records(...)` yields, for every row, either `SourceRow(row, data)` or `RowError(row, reason,
raw)`, so one bad row never stops a run: the caller quarantines errors and goes on. It knows
nothing about prompts; flows map the fields they need (`fields={"instruction": "question",
"text": "passages.0.body"}`: output name → dotted path, integers index lists). A mapped path
that is absent leaves the key out, so the caller can say "missing" rather than guess.

Rows are numbered from 1: the line number for JSONL, the data row for CSV (header excluded), the
element for a JSON array, the row for Parquet and datasets. Unreadable files (not UTF-8 JSON,
corrupt Parquet) become one RowError at row 0; a path that does not exist, or a dataset that
cannot be loaded, is a ConfigError (the recipe is wrong, not the data).

Every string a SourceRow holds is valid Unicode: JSON can spell a lone surrogate (`"\\ud800"`),
which no UTF-8 writer (Parquet, JSONL) accepts, so a row holding one anywhere, mapped or not, is
a RowError whose `field` is the dotted path of the bad value. A RowError's `raw` is ASCII-safe.

Formats (`format="auto"` picks by suffix; a directory is a `datasets.save_to_disk` folder):
- jsonl: one JSON object per line; blank lines skipped; each line decoded as strict UTF-8.
- json: an array of objects, or an object holding one under "data"/"rows"/"train".
- csv: header row; cells are strings, and a cell holding a JSON array (`["a", "b"]`) becomes a
  list, the only way CSV can carry list fields such as correct_answers.
- parquet: read in record batches.
- hf (dataset name): `datasets.load_dataset(name, config, split=split)`, from the hub or the
  local cache (offline when HF_DATASETS_OFFLINE=1); hf_disk: `datasets.load_from_disk(path)`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tasks.adapters.errors import ConfigError

RAW_CHARS = 500
_SURROGATE = re.compile("[\ud800-\udfff]")
_SUFFIX_FORMAT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
                  ".pq": "parquet", ".csv": "csv"}


class SourceRow(NamedTuple):
    row: int
    data: dict[str, Any]


class RowError(NamedTuple):
    row: int
    reason: str
    raw: str
    field: str = "<row>"


def invalid_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """(dotted path, reason) of the first string or key in `value` that is not valid Unicode."""
    if isinstance(value, str):
        bad = _SURROGATE.search(value)
        if bad is None:
            return None
        return path or "<value>", f"not valid Unicode: lone surrogate U+{ord(bad.group()):04X}"
    items: Any = ()
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, str) and (found := invalid_text(key, path)):
                return _join(path, ascii(key)), found[1]
        items = ((str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((str(i), v) for i, v in enumerate(value))
    for key, item in items:
        if (found := invalid_text(item, _join(path, key))) is not None:
            return found
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _preview(value: Any) -> str:
    """An ASCII-safe JSON preview of a parsed value (lone surrogates stay `\\udXXX` escapes)."""
    return json.dumps(value, ensure_ascii=True, default=str)[:RAW_CHARS]


def get_path(record: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of dotted `path` in nested dicts/lists (`a.0.b`)."""
    node = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and part.lstrip("-").isdigit() and \
                -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def map_fields(record: dict[str, Any], fields: dict[str, str] | None) -> dict[str, Any]:
    """`record` projected onto `fields` (output name → dotted path); absent paths left out."""
    if fields is None:
        return record
    out = {}
    for name, path in fields.items():
        found, value = get_path(record, path)
        if found:
            out[name] = value
    return out


def _raw(data: bytes | str) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return text[:RAW_CHARS]


def _utf8_error(exc: UnicodeDecodeError) -> str:
    return f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _jsonl(path: Path) -> Iterator[SourceRow | RowError]:
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield RowError(number, _utf8_error(exc), _raw(line))
                continue
            except json.JSONDecodeError as exc:
                yield RowError(number, f"not valid JSON: {exc.msg} (column {exc.colno})",
                               _raw(line))
                continue
            if not isinstance(value, dict):
                yield RowError(number, f"expected a JSON object, got {type(value).__name__}",
                               _raw(line))
                continue
            yield SourceRow(number, value)


def _json(path: Path) -> Iterator[SourceRow | RowError]:
    data = path.read_bytes()
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        yield RowError(0, "file " + _utf8_error(exc), _raw(data))
        return
    except json.JSONDecodeError as exc:
        yield RowError(0, f"file is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                       f"{exc.colno})", _raw(data))
        return
    if isinstance(value, dict):
        value = next((value[k] for k in ("data", "rows", "train") if isinstance(value.get(k), list)),
                     None)
    if not isinstance(value, list):
        yield RowError(0, "expected a JSON array of objects (or {\"data\": [...]})", _raw(data))
        return
    for number, item in enumerate(value, start=1):
        if isinstance(item, dict):
            yield SourceRow(number, item)
        else:
            yield RowError(number, f"expected a JSON object, got {type(item).__name__}",
                           _preview(item))


def _cell(value: str | None) -> Any:
    if value is not None and value.startswith("[") and value.endswith("]"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, list) else value
    return value


def _csv(path: Path) -> Iterator[SourceRow | RowError]:
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is reported
    # on its own instead of failing the whole file.
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for number, row in enumerate(reader, start=1):
        values = [v for v in row.values() if isinstance(v, str)]
        if any(any(0xDC80 <= ord(c) <= 0xDCFF for c in v) for v in values):
            raw = ",".join(values).encode("utf-8", "surrogateescape")
            yield RowError(number, "not valid UTF-8", _raw(raw))
            continue
        if None in row:
            yield RowError(number, f"{len(row[None])} more cells than header columns",
                           _raw(",".join(values)))
            continue
        yield SourceRow(number, {k: _cell(v) for k, v in row.items()})


def _parquet(path: Path) -> Iterator[SourceRow | RowError]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        yield RowError(0, f"not a readable Parquet file: {exc}", "")
        return
    number = 0
    for batch in pf.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield SourceRow(number, record)


def _hf_rows(ds: Any) -> Iterator[SourceRow | RowError]:
    for number, record in enumerate(ds, start=1):
        yield SourceRow(number, dict(record))


def _hf_disk(path: Path, split: str) -> Iterator[SourceRow | RowError]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:  # FileNotFoundError or datasets' own errors
        raise ConfigError(f"{path}: not a `datasets` save_to_disk directory: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ConfigError(f"{path}: no split {split!r} (has: {', '.join(ds)})")
        ds = ds[split]
    yield from _hf_rows(ds)


def _hf_hub(name: str, config: str | None, split: str) -> Iterator[SourceRow | RowError]:
    import datasets

    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as exc:  # offline, unknown dataset, unknown split ...
        raise ConfigError(f"dataset {name!r} (config {config!r}, split {split!r}) could not be "
                          f"loaded: {type(exc).__name__}: {str(exc)[:300]}") from None
    yield from _hf_rows(ds)


def read_records(*, path: str | Path | None = None, dataset: str | None = None,
                 config: str | None = None, split: str = "train", format: str = "auto",
                 fields: dict[str, str] | None = None,
                 limit: int | None = None) -> Iterator[SourceRow | RowError]:
    """Every row of one source, mapped through `fields`, or the reason it could not be read."""
    if dataset is not None:
        rows = _hf_hub(dataset, config, split)
    else:
        if path is None:
            raise ConfigError("a source needs a `path` or a `dataset`")
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        fmt = format
        if fmt == "auto":
            fmt = "hf_disk" if path.is_dir() else _SUFFIX_FORMAT.get(path.suffix.lower(), "")
            if not fmt:
                raise ConfigError(f"{path}: cannot tell the format from the suffix; set "
                                  "`format:` to jsonl, json, parquet, csv or hf_disk")
        readers = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet}
        rows = _hf_disk(path, split) if fmt == "hf_disk" else readers[fmt](path)
    for count, item in enumerate(rows, start=1):
        if limit is not None and count > limit:
            return
        if isinstance(item, RowError):
            yield item
        elif (bad := invalid_text(item.data)) is not None:
            yield RowError(item.row, bad[1], _preview(item.data), field=bad[0])
        else:
            yield SourceRow(item.row, map_fields(item.data, fields))
