"""Shard leases in the lake (tasks/shards.py), on a local directory and on moto's S3 server."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from tasks import shards
from tasks.adapters.lake import Lake


@pytest.fixture
def lake(any_settings) -> Lake:
    return Lake.from_settings(any_settings)


def _plant(lake: Lake, key: str, generation: int, owner: str, expires_in: float) -> None:
    body = json.dumps({"owner": owner, "expires": time.time() + expires_in}).encode()
    assert lake.create_bytes(f"_leases/{key}/{generation:08d}", body)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lease_of_another_owner_is_respected(lake):
    _plant(lake, "k", 0, f"{shards.HOST}:1:someone", expires_in=60)  # pid 1 is alive
    assert shards.try_lease(lake, "k") is None
    _plant(lake, "j", 0, "other-host:123:someone", expires_in=60)
    assert shards.try_lease(lake, "j") is None


def test_an_expired_lease_is_taken_over_with_the_next_generation(lake):
    _plant(lake, "k", 0, "other-host:123:someone", expires_in=-1)
    assert shards.try_lease(lake, "k").generation == "00000001"
    assert shards.try_lease(lake, "k").generation == "00000002"  # ours: taking it again is fine


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(lake):
    _plant(lake, "k", 0, f"{shards.HOST}:{_dead_pid()}:crashed", expires_in=60)
    assert shards.try_lease(lake, "k").generation == "00000001"


async def test_claimed_waits_for_the_holder_to_release(lake, monkeypatch):
    monkeypatch.setattr(shards, "LEASE_POLL_S", 0.05)
    _plant(lake, "k", 0, "other-host:123:someone", expires_in=0.6)  # expires soon
    async with shards.claimed(lake, "k") as waited:
        assert waited >= 0.4
        lease = json.loads(lake.read_bytes("_leases/k/00000001"))
        assert lease["owner"] == shards.OWNER and lease["expires"] > time.time()
    assert json.loads(lake.read_bytes("_leases/k/00000001"))["expires"] == 0.0  # released


async def test_taking_over_an_unreleased_lease_runs_the_catch_up_first_and_a_released_one_does_not(lake):
    caught_up: list[str] = []
    _plant(lake, "k", 0, f"{shards.HOST}:{_dead_pid()}:crashed", expires_in=60)  # left held
    async with shards.claimed(lake, "k", on_takeover=lambda: caught_up.append("k")):
        assert caught_up == ["k"]
    released = json.dumps({"owner": "other-host:123:someone", "expires": 0.0}).encode()
    assert lake.create_bytes("_leases/j/00000000", released)
    async with shards.claimed(lake, "j", on_takeover=lambda: caught_up.append("j")):
        pass
    async with shards.claimed(lake, "k", on_takeover=lambda: caught_up.append("k again")):
        pass  # the last holder (this process) released it
    assert caught_up == ["k"]


async def test_a_renewal_still_writing_when_the_body_ends_never_lands_after_the_release(lake, monkeypatch):
    write = shards._write_lease

    def slow(lake_, key, generation, expires):
        if expires:  # a renewal: slow enough to be in flight when the body ends
            time.sleep(0.3)
        write(lake_, key, generation, expires)

    monkeypatch.setattr(shards, "_write_lease", slow)
    async with shards.claimed(lake, "k", ttl=0.3):
        await asyncio.sleep(0.15)  # the first renewal (at ttl/3) is writing now
    await asyncio.sleep(0.5)  # whatever was in flight has finished
    assert json.loads(lake.read_bytes("_leases/k/00000000"))["expires"] == 0.0
