"""Test-wide setup: offline Prefect settings and the shared fixtures of tests/fixtures/."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Each fixture module owns one real component (simulator, S3 server, Prefect API, ...).
pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.sim",
    "tests.fixtures.prefect",
    "tests.fixtures.browser",
    "tests.fixtures.postgres",
]


def pytest_collection_modifyitems(config, items):
    """Files holding long end-to-end tests (marked `slow`) first: `make test` spreads whole
    files over two processes (`-n 2 --dist loadfile`), and the short files then fill in beside
    the long ones instead of one long file running alone at the end. Order within a file is kept."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
