"""`ultraforge demo`, as a new user runs it: the whole factory, then again for free."""

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from flows.cli import main
from flows.translate import TranslateParams, translate
from tasks.core.translate.fields import slots
from tests.fixtures.factory import fast_pool, settings_env, settings_in
from tests.fixtures.translate import strip_texts

# sha256 of the demo's exports: the UltraFeedback files as main made them before the shard engine
# was rebuilt (issue 7, commit 39ab8c6), the UltraChat files since their ids became stable
# dialogue-id prefixes (issue 8), the derived sets since they exist (issue 8). The same recipes,
# seed and simulator must keep giving these exact bytes; a deliberate change of the data (a new
# recipe default, new simulator content) updates them. The DatasetDict folders are left out:
# `datasets` writes fingerprints of its own into them.
GOLDEN = {
    "exports/dpo/ultrafeedback_binarized/README.md":
        "cb933abc954ee0628e2ef9f079bfd111133fd55bd0e0847a38b444db77a8eb97",
    "exports/dpo/ultrafeedback_binarized/data/test_gen.parquet":
        "53777bb50e06936bbcd629e28a699587c2a768d368088bf3850cd28b37ff84f6",
    "exports/dpo/ultrafeedback_binarized/data/test_prefs.parquet":
        "362ac4d61587c5f2fb40705862dfa556ad0ac837f1617491cfd273dd6e7364f6",
    "exports/dpo/ultrafeedback_binarized/data/test_sft.parquet":
        "bff6f1b7b55b716cd6b62b0aee2e1d2a018c54b1e6a3d5174cb9cb472e5f896c",
    "exports/dpo/ultrafeedback_binarized/data/train_gen.parquet":
        "0397bb25eef41eca253ec1757d1e1446d875cbe1af2ad0eaf37790629d796465",
    "exports/dpo/ultrafeedback_binarized/data/train_prefs.parquet":
        "b46eb85b97fee1a8b0691c13088c0c103a90cad02f88f73db2a2c94a02855d33",
    "exports/dpo/ultrafeedback_binarized/data/train_sft.parquet":
        "b46eb85b97fee1a8b0691c13088c0c103a90cad02f88f73db2a2c94a02855d33",
    "exports/sft/ultrachat_200k/README.md":
        "d6c0278955b2ff0ba3e767b03b32c853ec00958c463397f7c97a827e2576b66b",
    "exports/sft/ultrachat_200k/data/test_gen.parquet":
        "a5193844605d79df2eaad1c713bd278f3a83758f7bcb13634c41961080766ae1",
    "exports/sft/ultrachat_200k/data/test_sft.parquet":
        "00e9909a100512e36db04b8fde8c9009d13a19aaa209f500b8df97d2fa8c5f62",
    "exports/sft/ultrachat_200k/data/train_gen.parquet":
        "1575bad86edc3f153b5089417b02859ad6a36ff0c564fed61941c24a667cc173",
    "exports/sft/ultrachat_200k/data/train_sft.parquet":
        "cf484aeb7a7ae7083d793d831d0b14b93ecf57e0d6d05fde16837aa32aef3dc3",
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


def exports_of(lake: Path) -> dict[Path, bytes]:
    """Every file under exports/, the DatasetDict folders' contents included."""
    return {p: p.read_bytes() for p in sorted((lake / "exports").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(prefect_api, tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """`ultraforge demo --train` run once for this module: its data dir and its output."""
    data = tmp_path_factory.mktemp("demo") / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULTRAFORGE_DATA_DIR", str(data))
        first = CliRunner().invoke(main, ["demo", "--train"], catch_exceptions=False)
        assert first.exit_code == 0, first.output
        yield data, first.output


@pytest.mark.slow
def test_demo_with_training_gives_the_golden_exports_trains_on_them_and_a_rerun_pays_nothing(
        demo, monkeypatch):
    data, output = demo
    monkeypatch.setenv("ULTRAFORGE_DATA_DIR", str(data))
    runner = CliRunner()
    first = SimpleNamespace(output=output)
    assert "0 repeated paid calls" in first.output
    lake = data / "lake"
    uf_rows = [json.loads(line) for line in
               (lake / "exports/ultrafeedback/ultrafeedback.jsonl").read_text().splitlines()]
    uc_rows = [json.loads(line) for line in
               (lake / "exports/ultrachat/ultrachat/ultrachat.jsonl").read_text().splitlines()]
    assert len(uf_rows) == 100 and all(len(r["completions"]) == 4 for r in uf_rows)
    assert len(uc_rows) > 90 and all(len(r["data"]) >= 4 for r in uc_rows)
    assert (data / "ultraforge.duckdb").exists()
    before = exports_of(lake)
    assert {str(p.relative_to(lake)): hashlib.sha256(b).hexdigest() for p, b in before.items()
            if "/dataset/" not in str(p) and "-ja/" not in str(p)} == GOLDEN
    # TRL trained on the exported sets as they are, and left them as they were (no cache files)
    sets = {kind: datasets.load_from_disk(str(lake / f"exports/{kind}/{name}/dataset"))
            for kind, name in (("sft", "ultrachat_200k"), ("dpo", "ultrafeedback_binarized"))}
    assert len(sets["sft"]["train_sft"]) == 90 and len(sets["dpo"]["train_prefs"]) == 75
    # the first records of each set in Japanese: a card, a split file per English split
    for kind, name, splits in (("ultrafeedback", "ultrafeedback", ["train"]),
                               ("ultrachat", "ultrachat", ["train"]),
                               ("sft", "ultrachat_200k", list(sets["sft"])),
                               ("dpo", "ultrafeedback_binarized", list(sets["dpo"]))):
        folder = lake / f"exports/{kind}-ja/{name}"
        assert "Japanese" in (folder / "README.md").read_text(), kind
        assert sorted(p.stem for p in (folder / "data").glob("*.parquet")) == sorted(splits), kind
        assert len((folder / "data" / f"{splits[0]}.jsonl").read_text().splitlines()) == 5, kind
        english = {"ultrafeedback": "exports/ultrafeedback/ultrafeedback.parquet",
                   "ultrachat": "exports/ultrachat/ultrachat/ultrachat.parquet"}.get(
                       kind, f"exports/{kind}/{name}/data/{splits[0]}.parquet")
        translated = pq.read_table(folder / "data" / f"{splits[0]}.parquet").to_pylist()
        for en, ja in zip(pq.read_table(lake / english).to_pylist()[:5], translated, strict=True):
            assert strip_texts(ja, kind) == strip_texts(en, kind), kind  # ids, ratings, scores …
    for kind in ("sft", "dpo"):
        metrics = json.loads((data / "models" / kind / "metrics.json").read_text())
        curve = [step["loss"] for step in metrics["loss_curve"]]
        assert len(curve) >= 10 and curve[-1] < curve[0], (kind, curve)
        assert (data / "models" / kind / "config.json").is_file()

    second = runner.invoke(main, ["demo"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert "simulator   0 HTTP requests" in second.output
    after = exports_of(lake)
    assert {p: b for p, b in after.items() if "/dataset/" not in str(p)} == {
        p: b for p, b in before.items() if "/dataset/" not in str(p)}  # same bytes, from the journal
    assert {p.relative_to(lake) for p in after} == {p.relative_to(lake) for p in before}


# what the translation must hand back byte for byte, found without the code under test
PROTECTED = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$|^Confidence: \d{1,3}%[ \t]*$", re.M | re.S)


@pytest.mark.slow
def test_fifty_raw_records_of_each_set_and_the_whole_derived_sets_of_the_demo_keep_every_non_text_field(
        demo, tmp_path, monkeypatch, make_simulator):
    settings = settings_in(tmp_path / "data")
    lake = Path(settings.lake)
    shutil.copytree(demo[0] / "lake" / "exports", lake / "exports")  # the demo's sets, as landed
    sim = make_simulator("unlimited", seed=5)
    for key, value in settings_env(settings, sim.base_url, fast_pool(tmp_path)).items():
        monkeypatch.setenv(key, value)
    protected = 0
    for kind, english, overrides in (
            ("ultrafeedback", "exports/ultrafeedback/ultrafeedback.parquet", ["limit=50", "feedback=true"]),
            ("ultrachat", "exports/ultrachat/ultrachat/ultrachat.parquet", ["limit=50"]),
            ("sft", "exports/sft/ultrachat_200k", []),
            ("dpo", "exports/dpo/ultrafeedback_binarized", [])):
        out = translate(TranslateParams(set=kind, overrides=overrides))
        assert out.counts.records_flagged == 0, out.flagged_examples
        feedback = kind == "ultrafeedback"
        sources = ({"train": lake / english} if english.endswith(".parquet") else
                   {p.stem: p for p in sorted((lake / english / "data").glob("*.parquet"))})
        assert sorted(out.rows) == sorted(sources), kind
        for split, path in sources.items():
            en_rows = pq.read_table(path).to_pylist()[:50 if overrides else None]
            ja_rows = pq.read_table(Path(out.folder) / "data" / f"{split}.parquet").to_pylist()
            assert len(ja_rows) == len(en_rows) == out.rows[split] > 0, (kind, split)
            for en, ja in zip(en_rows, ja_rows, strict=True):
                assert strip_texts(ja, kind, feedback) == strip_texts(en, kind, feedback), (kind, split)
                assert all(ja[f"{k}_en"] == en[k] for k in en if f"{k}_en" in ja)  # originals kept
                for a, b in zip(slots(en, kind, feedback), slots(ja, kind, feedback), strict=True):
                    assert a.path == b.path and a.text != b.text
                    assert PROTECTED.findall(b.text) == PROTECTED.findall(a.text), (kind, a.path)
                    protected += len(PROTECTED.findall(a.text))
    assert protected > 0  # the demo's answers do hold code blocks or Confidence lines
