"""`ultraforge demo`, as a new user runs it: the whole factory, then again for free."""

import hashlib
import json

from click.testing import CliRunner

from flows.cli import main

# sha256 of the demo's exports: the UltraFeedback files as main made them before the shard engine
# was rebuilt (issue 7, commit 39ab8c6), the UltraChat files since their ids became stable
# dialogue-id prefixes (issue 8). The same recipes, seed and simulator must keep giving these
# exact bytes; a deliberate change of the data (a new recipe default, new simulator content)
# updates them.
GOLDEN = {
    "exports/ultrachat/ultrachat/messages.jsonl":
        "b50b942eeb69a1f35aac0f1f72adc9a2e18e33160750f0d42a3a7956cdfa6d20",
    "exports/ultrachat/ultrachat/messages.parquet":
        "40bad2c59b435cb4793b4d5b4690bd6dcd01e8cf4a4f8ef235e95e63b0cb984d",
    "exports/ultrachat/ultrachat/ultrachat.jsonl":
        "702fa4e7787928a727038000203542a6f71cdbfc51664e5d09eada618b41e707",
    "exports/ultrachat/ultrachat/ultrachat.parquet":
        "1f8149ed4e0383e1f6b61165a656cab3a976c73112f1ba0507b967d248de3b27",
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
