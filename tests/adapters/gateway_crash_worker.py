"""Subprocess body for the kill -9 test: send N distinct requests through a journaled gateway.

usage: python gateway_crash_worker.py BASE_URL JOURNAL_DIR N CONCURRENCY
"""

import asyncio
import sys
from pathlib import Path

from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.llm.journal import journal_at
from tasks.core.chat import ChatRequest
from tasks.core.pool import PoolConfig


async def main(base_url: str, journal_dir: str, n: int, concurrency: int) -> None:
    pool = PoolConfig.model_validate({
        "endpoints": {"sim": {"base_url": base_url, "limits": {
            "rpm": 100000, "max_concurrency": concurrency}}},
        "models": {"m": {"endpoint": "sim", "sampling": {"max_tokens": 512}}},
    })
    gateway = Gateway(pool, journal_at(Path(journal_dir)), {})
    requests = [ChatRequest(model="m", messages=({"role": "user", "content": f"q{i}"},))
                for i in range(n)]
    results = await gateway.complete_all(requests)
    await gateway.aclose()
    print(f"done {sum(r.ok for r in results)} {sum(r.from_journal for r in results)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
