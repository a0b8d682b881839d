"""Subprocess body standing in for a flow-run process of a worker: resources from the environment
(as a flow's first task builds them, so ULTRAFORGE_PUSHGATEWAY_URL starts the pushes), N calls
through the gateway, then a normal exit (the last push happens at exit).

usage: python pushing_flow_run.py MODEL N
"""

import json
import sys

from tasks.adapters.resources import current, run
from tasks.core.chat import ChatRequest


def main(model: str, n: int) -> None:
    res = current()
    requests = [ChatRequest(model=model, messages=({"role": "user", "content": f"q{i}?"},))
                for i in range(n)]
    results = run(res.gateway.complete_all(requests))
    print(json.dumps({"ok": sum(r.ok for r in results),
                      "attempts": sum(r.attempts for r in results)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
