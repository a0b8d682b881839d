"""Response time: time to first token plus time per token, slowed by load like vLLM.

With `max_num_seqs` set, at most that many requests are "generating" at once; the rest wait in a
queue (503 once `max_waiting` are waiting). A generating request takes longer the more others
run beside it, up to `time_factor_under_load` times when all slots are busy (the rule of
llm-d-inference-sim). Sleeping is asyncio.sleep: the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import random

from infra.simulator.config import Latency


async def pause(seconds: float) -> None:
    """asyncio.sleep, skipped for zero (the `unlimited` preset pays no loop round-trip)."""
    if seconds > 0:
        await asyncio.sleep(seconds)


class Scheduler:
    """Holds the running/waiting counts of one simulator."""

    def __init__(self, latency: Latency):
        self.cfg = latency
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(latency.max_num_seqs) if latency.max_num_seqs else None

    def overloaded(self) -> bool:
        """True when a new request would find every slot busy and the queue full."""
        cap = self.cfg.max_waiting
        return bool(self._slots and cap is not None and self._slots.locked() and self.waiting >= cap)

    async def serve(self, tokens: int, rng: random.Random) -> None:
        """Wait for a slot (if slots are limited), then for the generation time of `tokens`."""
        if self._slots is None:
            await pause(self.delay(tokens, rng))
            return
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            await pause(self.delay(tokens, rng))
        finally:
            self.running -= 1
            self._slots.release()

    def delay(self, tokens: int, rng: random.Random) -> float:
        """Seconds to generate `tokens` with the current number of running sequences."""
        cfg = self.cfg
        seconds = cfg.ttft_s + cfg.per_token_s * tokens
        if cfg.jitter:
            seconds *= 1 + rng.uniform(-cfg.jitter, cfg.jitter)
        if cfg.max_num_seqs and cfg.max_num_seqs > 1 and self.running > 1:
            busy = (self.running - 1) / (cfg.max_num_seqs - 1)
            seconds *= 1 + (cfg.time_factor_under_load - 1) * busy
        return seconds
