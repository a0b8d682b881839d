"""`ultraforge demo`, as a new user runs it: the whole factory, then again for free."""

import json

from click.testing import CliRunner

from flows.cli import main


def test_demo_lands_both_datasets_and_a_rerun_pays_nothing(prefect_api, tmp_path, monkeypatch):
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

    second = runner.invoke(main, ["demo"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "simulator   0 HTTP requests" in second.output
    assert {p: p.read_bytes() for p in exports} == before  # same bytes, all from the journal
