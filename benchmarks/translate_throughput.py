"""translate_throughput: the `translate` flow over a synthetic SFT-shaped set against an unlimited
simulator in its own process.

Makes N records (default 500: a prompt and four messages of two or three paragraphs, some with a
code block or a `Confidence:` line, every record distinct), runs the flow in this process, then
runs it again (every block landed: nothing paid). Prints one JSON line: requests, requests/s,
CPU-seconds per 1,000 requests of this process (the simulator and the Prefect server are other
processes), peak RSS, the rerun's CPU-seconds, and, as the baseline measured in the same run,
the bare official client (aiohttp transport, as the gateway's) sending translation-sized
requests to the same simulator.

    python benchmarks/translate_throughput.py [--records 500] [--concurrency 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

from benchmarks.factory import cpu_s, peak_rss_mb  # noqa: E402
from benchmarks.simproc import simulator_process, stats  # noqa: E402
from tasks.adapters.settings import RECIPES_DIR  # noqa: E402

BARE_REQUESTS = 2000
SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()),
                    ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())])))])
PARAGRAPH = ("Paragraph {j} of message {k} in record {i}: the committee reviewed the proposal "
             "carefully, weighed its costs against the expected benefits, and asked the authors "
             "to explain how the new process would work in practice for small teams.")


def write_set(folder: Path, n: int) -> None:
    """An SFT-shaped set folder (data/train_sft.parquet) of `n` distinct records."""
    rows = []
    for i in range(n):
        messages = []
        for k in range(4):
            text = "\n\n".join(PARAGRAPH.format(i=i, j=j, k=k) for j in range(2 + (i + k) % 2))
            if k % 2 and i % 3 == 0:
                text += f"\n\n```python\nprint({i} * {k})\n```\n\nConfidence: {80 + i % 20}%"
            messages.append({"content": text, "role": "user" if k % 2 == 0 else "assistant"})
        rows.append({"prompt": messages[0]["content"], "prompt_id": f"{i:064x}", "messages": messages})
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), folder / "data" / "train_sft.parquet")


def pool_file(tmp: Path, base_url: str, concurrency: int) -> Path:
    """The bundled pool with every model on one unlimited simulator endpoint."""
    pool = yaml.safe_load((RECIPES_DIR / "pool.yaml").read_text())
    template = next(iter(pool["endpoints"].values()))
    limits = {"max_concurrency": concurrency, "initial_concurrency": concurrency}
    pool["endpoints"] = {"local": {**template, "base_url": base_url, "limits": limits}}
    for model in pool["models"].values():
        model["endpoint"] = "local"
    path = tmp / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


async def bare_client(base_url: str, concurrency: int) -> float:
    """CPU-seconds per 1,000 translation-sized requests of the bare official client."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0,
                                http_client=openai.DefaultAioHttpClient())
    sem = asyncio.Semaphore(concurrency)
    system = "Translate the user's message into Japanese. Reply with the translation only."

    async def one(i: int) -> None:
        async with sem:
            await client.chat.completions.create(
                model="gpt-4o", max_tokens=1024, temperature=0,
                messages=[{"role": "system", "content": system},
                          {"role": "user", "content": PARAGRAPH.format(i=i, j=0, k=0)}])

    started = cpu_s()
    await asyncio.gather(*(one(i) for i in range(BARE_REQUESTS)))
    await client.close()
    return 1000 * (cpu_s() - started) / BARE_REQUESTS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=256)
    args = ap.parse_args()

    from prefect import flow

    from flows.translate import TranslateParams, translate
    from tasks.adapters.resources import Resources, activate
    from tasks.adapters.settings import Settings

    with tempfile.TemporaryDirectory() as tmp, simulator_process("unlimited", []) as base_url:
        tmp_path = Path(tmp)
        write_set(tmp_path / "set", args.records)
        flow(name="warm-up")(lambda: None)()  # the temporary Prefect server, before timing
        activate(Resources.build(Settings(data_dir=tmp_path / "data",
                                          pool_path=pool_file(tmp_path, base_url, args.concurrency))))
        params = TranslateParams(set="sft", overrides=[f"input={tmp_path / 'set'}", "name=bench"])
        try:
            before = stats(base_url)["requests"]
            cpu0, wall0 = cpu_s(), time.monotonic()
            out = translate(params)
            wall, cpu = time.monotonic() - wall0, cpu_s() - cpu0
            requests = stats(base_url)["requests"] - before
            cpu1 = cpu_s()
            again = translate(params)
            rerun_cpu = cpu_s() - cpu1
        finally:
            activate(None)
        assert stats(base_url)["requests"] - before == requests, "the rerun paid for calls"
        bare = asyncio.run(bare_client(base_url, args.concurrency))
    print(json.dumps({
        "benchmark": "translate_throughput", "records": args.records, "requests": requests,
        "unique_chunks": out.counts.unique_chunks, "flagged_chunks": out.counts.flagged_chunks,
        "wall_s": round(wall, 2), "requests_per_s": round(requests / wall, 1),
        "cpu_s_per_1000_requests": round(1000 * cpu / requests, 2),
        "bare_client_cpu_s_per_1000_requests": round(bare, 2),
        "ratio_to_bare_client": round(cpu / requests * 1000 / bare, 2),
        "rerun_cpu_s": round(rerun_cpu, 2), "rerun_records": again.counts.records_written,
        "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
