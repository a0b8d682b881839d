"""factory_memory: peak RSS of the `ultrafeedback` flow process at two sizes, same run.

Runs benchmarks/factory_throughput.py (no baseline) in a fresh process per size, default 2,000
and 20,000 prompts, against the unlimited simulator, and prints one JSON line: peak RSS per size
and their ratio (targets: ≤ 1 GiB at 20,000 and ≤ 1.25× the 2,000-prompt figure). The larger
run makes ~240,000 requests: expect a quarter of an hour on 2 cores.

    python benchmarks/factory_memory.py [--small 2000] [--large 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(prompts: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "factory_throughput.py"), "--prompts",
                          str(prompts), "--skip-baseline"], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    args = ap.parse_args()
    small, large = run(args.small), run(args.large)
    print(json.dumps({
        "benchmark": "factory_memory",
        "small": {k: small[k] for k in ("prompts", "requests", "peak_rss_mb", "requests_per_s",
                                        "flow_cpu_s_per_1000_requests")},
        "large": {k: large[k] for k in ("prompts", "requests", "peak_rss_mb", "requests_per_s",
                                        "flow_cpu_s_per_1000_requests", "requests_per_task_run")},
        "rss_ratio_large_to_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3)}))


if __name__ == "__main__":
    main()
