"""stage_overlap: do generation and judging run at the same time?

Two simulators in their own processes, each serving at most `rate` requests/s (a fixed latency
and a fixed number of sequences at once, shared by every model on it): the 17 generation models
on one, the judge on the other. The `ultrafeedback` flow runs N prompts (default 1,000). If the
stages ran one after another the wall time would be the sum of generation requests ÷ rate and
judge requests ÷ rate; streamed, it approaches the larger of the two. Prints one JSON line with
the wall time, that lower bound and their ratio (target ≤ 1.15).

    python benchmarks/stage_overlap.py [--prompts 1000] [--rate 50]
"""

from __future__ import annotations

import argparse
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

from benchmarks.factory import pool_file, recipe_file, run_flow, warm_up  # noqa: E402
from benchmarks.simproc import simulator_process, stats  # noqa: E402

LATENCY_S = 0.2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=50, help="requests/s each endpoint serves")
    args = ap.parse_args()
    slots = max(1, round(args.rate * LATENCY_S))
    server = [f"latency.ttft_s={LATENCY_S}", f"latency.max_num_seqs={slots}"]
    # limits the gateway paces by (none bind: the servers' slots do), so concurrency is fixed
    limits = {"rpm": 10**7, "max_concurrency": 4 * slots}
    with tempfile.TemporaryDirectory() as tmp, \
            simulator_process("unlimited", server) as gen_url, \
            simulator_process("unlimited", server) as judge_url:
        tmp_path = Path(tmp)
        warm_up()
        recipe = recipe_file(tmp_path, args.prompts)
        pool = pool_file(tmp_path, {"local": (gen_url, limits), "judge": (judge_url, limits)},
                         judge="judge")
        started = time.monotonic()
        out = run_flow(tmp_path, recipe, pool)
        wall = time.monotonic() - started
        gen, judge = stats(gen_url)["requests"], stats(judge_url)["requests"]
    bound = max(gen, judge) / args.rate
    print(json.dumps({
        "benchmark": "stage_overlap", "prompts": args.prompts, "rate_per_endpoint": args.rate,
        "generation_requests": gen, "judge_requests": judge, "wall_s": round(wall, 1),
        "lower_bound_s": round(bound, 1), "sequential_s": round((gen + judge) / args.rate, 1),
        "ratio_to_bound": round(wall / bound, 3),
        "exported_completions": out.counts.exported_completions}))


if __name__ == "__main__":
    main()
