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
]
