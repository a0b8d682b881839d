"""The translation lake tables (warehouse views of the same names, tasks/core/tables.py):

    translate_flags   one row per flagged record and reason, per published translation
    translate_usage   requests, journal hits, tokens and cost per block shard and model

The translated rows themselves land per block as files of the set's own schema
(tasks/core/translate/blocks.py), and are published as the set's files.
"""

from __future__ import annotations

import pyarrow as pa

from tasks.core.tables import Registry, TableSpec
from tasks.core.ultrafeedback.tables import TABLES as UF_TABLES

_STR, _INT, _BOOL = pa.string(), pa.int64(), pa.bool_()
FLAGS = TableSpec("translate_flags", pa.schema([
    ("set", _STR), ("lang", _STR), ("name", _STR), ("fingerprint", _STR), ("split", _STR),
    ("row", _INT), ("record", _STR), ("reason", _STR), ("detail", _STR), ("translated", _BOOL)]),
    keys=("set", "lang", "name", "fingerprint", "split", "row", "reason"))
USAGE = TableSpec("translate_usage", UF_TABLES["uf_usage"].schema)  # one usage shape everywhere
TABLES = Registry([FLAGS, USAGE])
