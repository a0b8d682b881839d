"""`ultraforge demo`, as a new user runs it: the whole factory, then again for free."""

import hashlib
import json

from click.testing import CliRunner

from flows.cli import main

# sha256 of the demo's exports as main made them before the shard engine was rebuilt (issue 7,
# commit 39ab8c6): the same recipes, seed and simulator must keep giving these exact bytes. A
# deliberate change of the data (a new recipe default, new simulator content) updates them.
GOLDEN = {
    "exports/ultrachat/ultrachat/messages.jsonl":
        "7a18a5c2826fa7b66fd9797f729e6f019c0c7eb9df7e81600768fcdc6014a51c",
    "exports/ultrachat/ultrachat/messages.parquet":
        "cfcda5a6ed82613f73f6eb14638d943f699068a5445af66e6a72b7b5ba6cc2fd",
    "exports/ultrachat/ultrachat/ultrachat.jsonl":
        "8090dd02a7aab41042dafbf7953ce3183830f4ac060fff604383b1e41219a1b2",
    "exports/ultrachat/ultrachat/ultrachat.parquet":
        "fa501295682453bc62457336202b18f09b6039451d37e1242bfab7dc98b703c0",
    "exports/ultrafeedback/ultrafeedback.jsonl":
        "f262225df2a5dc5c7e9dfcff645c8f3b17caa8902a2baa856e11b0cc74a6c16c",
    "exports/ultrafeedback/ultrafeedback.parquet":
        "c16a6a3ea3f99a8e1365666aba567a9737a4ea7201535f99a13781d9e9c7b566",
}


def test_demo_exports_are_byte_identical_to_before_the_engine_rebuild_and_a_rerun_pays_nothing(
        prefect_api, tmp_path, monkeypatch):
    monkeypatch.setenv("ULTRAFORGE_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    first = runner.invoke(main, ["demo"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "0 repeated paid calls" in first.output
    lake = tmp_path / "data" / "lake"
    uf_rows = [json.loads(line) for line in
               (lake / "exports/ultrafeedback/ultrafeedback.jsonl").read_text().splitlines()]
    uc_rows = [json.loads(line) for line in
               (lake / "exports/ultrachat/ultrachat/ultrachat.jsonl").read_text().splitlines()]
    assert len(uf_rows) == 100 and all(len(r["completions"]) == 4 for r in uf_rows)
    assert len(uc_rows) > 90 and all(len(r["data"]) >= 4 for r in uc_rows)
    assert (tmp_path / "data" / "ultraforge.duckdb").exists()
    exports = sorted((lake / "exports").rglob("*.*"))
    before = {p: p.read_bytes() for p in exports}
    assert {str(p.relative_to(lake)): hashlib.sha256(b).hexdigest()
            for p, b in before.items()} == GOLDEN

    second = runner.invoke(main, ["demo"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "simulator   0 HTTP requests" in second.output
    assert {p: p.read_bytes() for p in exports} == before  # same bytes, all from the journal
