"""The supervised sweep loop shared by the use-application and objection deadline sweeps."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.errors import DsgwError
from gateway.sweeping import SweepLoop

LOG = logging.getLogger("tests.sweeping")


async def test_a_failed_round_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    done = asyncio.Event()

    async def round_() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise DsgwError("store is down")
        if len(rounds) == 3:
            done.set()

    loop = SweepLoop(round_, name="test-sweep", what="test sweep", log=LOG)
    with caplog.at_level(logging.WARNING, logger="tests.sweeping"):
        loop.start(0.001)
        assert loop.running
        await asyncio.wait_for(done.wait(), 5)
        await loop.stop()
    assert not loop.running
    assert "test sweep failed, will retry: store is down" in caplog.text


async def test_start_twice_runs_one_loop_and_stop_is_idempotent() -> None:
    started = 0

    async def round_() -> None:
        nonlocal started
        started += 1

    loop = SweepLoop(round_, name="test-sweep", what="test sweep", log=LOG)
    loop.start(60.0)
    loop.start(60.0)
    await asyncio.sleep(0.01)
    assert started == 1
    await loop.stop()
    await loop.stop()
    assert not loop.running
