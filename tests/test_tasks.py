"""The supervised background task every loop of the gateway runs in, and the periodic loop
built on it: started once, stopped for sure, and never failing unseen."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.sweeping import SweepLoop
from gateway.tasks import Supervised

LOG = logging.getLogger("tests.tasks")


async def test_start_twice_starts_one_task() -> None:
    started = 0
    release = asyncio.Event()

    async def work() -> None:
        nonlocal started
        started += 1
        await release.wait()

    task = Supervised("test-task", log=LOG)
    task.start(work)
    task.start(work)  # no second coroutine is even created
    await asyncio.sleep(0.01)
    assert started == 1 and task.running
    assert [t.get_name() for t in asyncio.all_tasks()].count("test-task") == 1
    release.set()
    await task.join()
    assert not task.running and task.failure is None


async def test_stop_cancels_and_waits_for_the_end() -> None:
    cleaned_up = False
    entered = asyncio.Event()

    async def work() -> None:
        nonlocal cleaned_up
        try:
            entered.set()
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # the clean-up itself awaits: stop must wait for it
            cleaned_up = True

    task = Supervised("test-task", log=LOG)
    task.start(work)
    await entered.wait()
    await task.stop()
    assert cleaned_up and not task.running and task.failure is None
    assert "test-task" not in [t.get_name() for t in asyncio.all_tasks()]
    await task.stop()  # twice is harmless


async def test_stop_and_join_when_never_started_do_nothing() -> None:
    task = Supervised("test-task", log=LOG)
    await task.stop()
    await task.join()
    task.cancel()
    assert not task.running and task.failure is None


async def test_a_stopped_task_can_start_again() -> None:
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(3600)

    task = Supervised("test-task", log=LOG)
    task.start(work)
    await asyncio.sleep(0)
    await task.stop()
    task.start(work)
    await asyncio.sleep(0)
    assert runs == 2 and task.running
    await task.stop()


async def test_a_crash_is_logged_at_once_and_remembered(caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("a bug in the loop")

    task = Supervised("test-crash", log=LOG)
    with caplog.at_level(logging.ERROR, logger="tests.tasks"):
        task.start(work)
        for _ in range(100):  # logged when it happens, before anyone stops the task
            if task.failure is not None:
                break
            await asyncio.sleep(0.001)
    assert isinstance(task.failure, RuntimeError) and not task.running
    [record] = [r for r in caplog.records if r.name == "tests.tasks"]
    assert record.levelno == logging.ERROR
    assert "test-crash: background task ended unexpectedly" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is task.failure
    await task.stop()  # the failure was reported; stopping does not raise it again
    await task.join()


async def test_a_task_ending_normally_is_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    async def work() -> int:
        return 1

    task = Supervised("test-task", log=LOG)
    with caplog.at_level(logging.DEBUG, logger="tests.tasks"):
        task.start(work)
        await task.join()
    assert task.failure is None and not task.running and not caplog.records


async def test_join_waits_without_cancelling() -> None:
    finish = asyncio.Event()
    finished = False

    async def work() -> None:
        nonlocal finished
        await finish.wait()
        await asyncio.sleep(0.01)
        finished = True

    task = Supervised("test-task", log=LOG)
    task.start(work)
    await asyncio.sleep(0)
    finish.set()
    await task.join()
    assert finished and not task.running


async def test_cancelling_the_caller_of_stop_still_cancels_the_caller() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a slow clean-up
            raise

    task = Supervised("test-task", log=LOG)
    task.start(stubborn)
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(task.stop())
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper


async def test_the_periodic_loop_survives_an_os_error_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = 0
    done = asyncio.Event()

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise OSError("disk unplugged")
        if rounds == 3:
            done.set()

    loop = SweepLoop(round_, name="test-sweep", what="test sweep", log=LOG)
    with caplog.at_level(logging.WARNING, logger="tests.tasks"):
        loop.start(0.001)
        await asyncio.wait_for(done.wait(), 5)
        assert loop.running
        await loop.stop()
    assert not loop.running and loop.failure is None
    assert "test sweep failed, will retry: disk unplugged" in caplog.text


async def test_a_bug_in_a_round_ends_the_loop_with_a_log(caplog: pytest.LogCaptureFixture) -> None:
    rounds = 0

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        raise RuntimeError("a bug in the round")

    loop = SweepLoop(round_, name="test-sweep", what="test sweep", log=LOG)
    with caplog.at_level(logging.WARNING, logger="tests.tasks"):
        loop.start(0.001)
        for _ in range(100):
            if not loop.running:
                break
            await asyncio.sleep(0.001)
    assert rounds == 1 and not loop.running
    assert isinstance(loop.failure, RuntimeError)
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "test-sweep: background task ended unexpectedly" in record.getMessage()
    await loop.stop()


async def test_a_loop_that_survives_bugs_logs_each_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds = 0
    done = asyncio.Event()

    async def round_() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 3:
            done.set()
        raise RuntimeError("a bug in the round")

    loop = SweepLoop(round_, name="test-sweep", what="test sweep", log=LOG, survive_bugs=True)
    with caplog.at_level(logging.WARNING, logger="tests.tasks"):
        loop.start(0.001)
        await asyncio.wait_for(done.wait(), 5)
        assert loop.running
        await loop.stop()
    assert loop.failure is None
    retried = [r for r in caplog.records if "failed unexpectedly, will retry" in r.getMessage()]
    assert len(retried) >= 2 and all(r.exc_info is not None for r in retried)
