"""binarize_scale: the DPO set of a full-size UltraFeedback run, by our DuckDB path and, in the
same run, by a straightforward `datasets.map` implementation of HF's script.

Writes a synthetic raw export of 64,000 prompts × 4 completions in the openbmb shape (responses,
ratings, rationales and critiques of realistic length; one prompt in six from truthful_qa),
then, each in a fresh process so each peak RSS is its own:
- ours: `export_dpo` with preset `current` (decontamination, pairs, six splits, Parquet per split,
  DatasetDict saved, card), into a local lake;
- baseline: `Dataset.from_parquet` → `filter` (drop truthful_qa) → `map` (chosen = max, rejected
  = `random.choice` of the others, seed 42, HF's loop) → `train_test_split(2000)` → Parquet.
Prints one JSON line: seconds and CPU-seconds of each, their phases, the speed-up of our whole
export (which also writes six splits, a DatasetDict and a card) and of the pairing alone (our
decontamination, scoring and pick against the baseline's `map` + `filter`), peak RSS of each
(targets: ≥ 10× faster than map, our peak RSS under 1 GiB).

    python benchmarks/binarize_scale.py [--prompts 64000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.factory import SOURCES, cpu_s, peak_rss_mb  # noqa: E402

WORDS = ["model", "answer", "careful", "detail", "reason", "example", "step", "result", "clear",
         "helpful", "correct", "question", "context", "note", "summary", "point", "method",
         "data", "value", "evidence", "claim"]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def write_input(path: Path, prompts: int) -> None:
    """A raw export of `prompts` rows, written in row groups of 2,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.adapters.lake import WRITER_OPTIONS
    from tasks.core.ultrafeedback.export import export_schema
    from tasks.core.ultrafeedback.recipe import FINE_GRAINED_ASPECTS

    schema = export_schema(FINE_GRAINED_ASPECTS)
    rng = random.Random(0)
    with pq.ParquetWriter(path, schema, **WRITER_OPTIONS) as w:
        for start in range(0, prompts, 2000):
            rows = []
            for i in range(start, min(prompts, start + 2000)):
                completions = []
                for m in range(4):
                    ratings = [str(rng.randint(1, 5)) for _ in range(4)]
                    untyped = [{"Rating": r, "Rationale": _text(rng, 25)} for r in ratings[:2]]
                    typed = [{"Type": ["1"], "Rationale": _text(rng, 20), "Rating": r,
                              "Rationale For Rating": _text(rng, 25)} for r in ratings[2:]]
                    completions.append({
                        "model": f"model-{(i + m) % 17}", "principle": "helpfulness",
                        "custom_system_prompt": _text(rng, 20), "response": _text(rng, 150),
                        "annotations": dict(zip(FINE_GRAINED_ASPECTS, untyped + typed,
                                                strict=True)),
                        "critique": _text(rng, 60),
                        "overall_score": float(rng.randint(1, 10)),
                        "fine-grained_score": sum(map(int, ratings)) / 4})
                rows.append({"source": SOURCES[i % len(SOURCES)],
                             "instruction": f"Prompt {i}: " + _text(rng, 30),
                             "models": [c["model"] for c in completions],
                             "completions": completions, "correct_answers": ["None"],
                             "incorrect_answers": ["None"]})
            w.write_table(pa.Table.from_pylist(rows, schema=schema))


def ours(path: Path, work: Path) -> dict:
    from tasks.adapters.resources import Resources, activate
    from tasks.adapters.settings import Settings
    from tasks.core.derived.binarize import DPORecipe
    from tasks.derived.dpo import export_dpo

    activate(Resources.build(Settings(data_dir=work / "data", lake_url=str(work / "lake"),
                                      _env_file=None)))
    started, cpu = time.perf_counter(), cpu_s()
    out = export_dpo.fn(DPORecipe(input=str(path)), str(work))
    return {"s": round(time.perf_counter() - started, 2), "cpu_s": round(cpu_s() - cpu, 2),
            "pairs": out.counts.pairs, "phases_s": out.seconds, "rows": out.published.rows,
            "peak_rss_mb": peak_rss_mb()}


def baseline(path: Path, work: Path) -> dict:
    """HF's create_dataset.py rule, row by row with `datasets.map`."""
    import hashlib

    import datasets

    datasets.disable_progress_bars()
    started, cpu = time.perf_counter(), cpu_s()
    ds = datasets.Dataset.from_parquet(str(path), cache_dir=str(work / "cache"))
    ds = ds.filter(lambda r: r["source"] != "truthful_qa")
    random.seed(42)

    def binarize(r: dict) -> dict:
        scored = [(float(c["overall_score"]), c["response"], c["model"])
                  for c in r["completions"] if c["overall_score"] is not None]
        if len(scored) < 2:
            return {"prompt": r["instruction"], "prompt_id": "", "chosen": [], "rejected": [],
                    "messages": [], "score_chosen": -100.0, "score_rejected": -100.0}
        best = max(scored, key=lambda t: t[0])
        worse = random.choice(scored)
        while worse == best:
            worse = random.choice(scored)

        def conv(text: str) -> list[dict]:
            return [{"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": text}]
        return {"prompt": r["instruction"],
                "prompt_id": hashlib.sha256(r["instruction"].encode()).hexdigest(),
                "chosen": conv(best[1]), "rejected": conv(worse[1]), "messages": conv(best[1]),
                "score_chosen": best[0], "score_rejected": worse[0]}

    loaded = time.perf_counter()
    ds = ds.map(binarize, remove_columns=ds.column_names)
    ds = ds.filter(lambda r: r["score_chosen"] != -100.0)
    paired = time.perf_counter()
    parts = ds.train_test_split(test_size=2000, seed=42)
    for name, split in parts.items():
        split.to_parquet(str(work / f"{name}.parquet"))
    return {"s": round(time.perf_counter() - started, 2), "cpu_s": round(cpu_s() - cpu, 2),
            "pairs": len(ds),
            "phases_s": {"load_and_filter": round(loaded - started, 3),
                         "pairs": round(paired - loaded, 3),
                         "split_and_write": round(time.perf_counter() - paired, 3)},
            "peak_rss_mb": peak_rss_mb()}


def child(which: str, path: str, work: str) -> None:
    fn = {"ours": ours, "baseline": baseline}[which]
    print(json.dumps(fn(Path(path), Path(work))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=64_000)
    ap.add_argument("--child", nargs=3, metavar=("WHICH", "INPUT", "WORK"))
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="binarize-scale-") as tmp:
        tmp = Path(tmp)
        path = tmp / "ultrafeedback.parquet"
        t = time.perf_counter()
        write_input(path, args.prompts)
        made = round(time.perf_counter() - t, 1)
        size_mb = round(path.stat().st_size / 2**20, 1)
        results = {}
        for which in ("ours", "baseline"):
            work = tmp / which
            work.mkdir()
            out = subprocess.run([sys.executable, __file__, "--child", which, str(path),
                                  str(work)], check=True, capture_output=True, text=True)
            results[which] = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "benchmark": "binarize_scale", "prompts": args.prompts, "completions": 4 * args.prompts,
        "input_mb": size_mb,
        "input_written_s": made, "ours": results["ours"], "datasets_map": results["baseline"],
        "speedup": round(results["baseline"]["s"] / results["ours"]["s"], 1),
        # the pairing alone on each side: map + filter against our decontaminate/score/pick
        "speedup_pairing": round(results["baseline"]["phases_s"]["pairs"]
                                 / results["ours"]["phases_s"]["pairs"], 1),
        "cpu_ratio": round(results["baseline"]["cpu_s"] / results["ours"]["cpu_s"], 1)}))


if __name__ == "__main__":
    main()
