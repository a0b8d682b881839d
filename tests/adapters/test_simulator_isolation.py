"""The simulator stands in for a third-party endpoint: it imports nothing from the factory.

If it shared the factory's token estimate, hashing or config loading, a bug there would be
invisible to every test that uses the simulator as the other side of the wire.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SIMULATOR = REPO / "infra" / "simulator"
FACTORY = ("tasks", "flows")


def _factory_imports(path: Path) -> list[str]:
    """`import x` / `from x import y` statements of `path` whose top-level package is the factory's."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"line {node.lineno}: {ast.unparse(node)}" for name in names
                  if name.split(".")[0] in FACTORY]
    return found


def test_no_simulator_module_imports_the_factory():
    modules = sorted(SIMULATOR.rglob("*.py"))
    assert len(modules) >= 10  # the scan really covers the package
    offending = {str(m.relative_to(REPO)): hits for m in modules if (hits := _factory_imports(m))}
    assert not offending, "the simulator imports the factory: " + "; ".join(
        f"{module} {', '.join(hits)}" for module, hits in offending.items())


def test_the_scan_catches_a_factory_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom tasks.core.tokens import estimate_tokens\nimport flows.cli as c\n"
                      "from .sibling import x\n")
    assert _factory_imports(module) == [
        "line 2: from tasks.core.tokens import estimate_tokens", "line 3: import flows.cli as c"]


def test_importing_and_running_the_simulator_loads_no_factory_module():
    """A fresh interpreter: import the package, build a config and the app, answer one request."""
    script = """
import asyncio, json, sys
import infra.simulator
import infra.simulator.__main__
from infra.simulator import build_app, load_config
from infra.simulator.engine import Simulator

config = load_config("tier3", overrides=["latency.ttft_s=0", "latency.per_token_s=0"])
build_app(config)
body = {"model": "m", "messages": [{"role": "user", "content": "List 3 topics about rivers."}]}
status, _, _ = asyncio.run(Simulator(config).complete(body))
assert status == 200, status
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("tasks", "flows"))))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
