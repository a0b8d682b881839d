"""`python -m infra.simulator --preset tier3 --port 8900 --set faults.rate_429=0.05 ...`"""

from __future__ import annotations

import argparse
import sys

from infra.simulator.config import preset_names
from infra.simulator.server import serve


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve until interrupted; a config error is one line and exit 1
    (see `serve`)."""
    parser = argparse.ArgumentParser(prog="python -m infra.simulator", description=__doc__)
    parser.add_argument("--preset", default="tier3", choices=preset_names())
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. limits.rpm=6000 (repeatable)",
    )
    args = parser.parse_args(argv)
    serve(args.preset, args.host, args.port, args.seed, args.overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
