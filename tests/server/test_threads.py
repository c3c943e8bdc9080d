"""The worker's threads: blocking calls off the event loop, model work on one training thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from fedproto.server.threads import WorkerThreads


@pytest.fixture(scope="module")
def threads() -> WorkerThreads:
    before = torch.get_num_threads()
    made = WorkerThreads("threads-test", max_threads=2, training_threads=2)
    assert torch.get_num_threads() == 1, "the creating thread keeps one intra-op thread"
    torch.set_num_threads(before)
    return made


async def test_blocking_work_runs_off_the_event_loop(threads: WorkerThreads) -> None:
    name = await threads.run_sync(lambda: threading.current_thread().name)
    assert name.startswith("fedproto-threads-test") and "train" not in name


async def test_model_work_runs_on_the_training_thread_with_its_threads(threads: WorkerThreads) -> None:
    name, count = await threads.run_training(
        lambda: (threading.current_thread().name, torch.get_num_threads())
    )
    assert name.startswith("fedproto-threads-test-train") and count == 2
    assert threads.training_threads == 2


async def test_training_is_busy_until_the_job_ends_even_when_its_waiter_gave_up(
    threads: WorkerThreads,
) -> None:
    release = threading.Event()
    future = threads.submit_training(release.wait, 10)
    assert threads.training_busy
    future.cancel()  # the awaiting side gives up; the thread is still inside the job
    await asyncio.sleep(0.05)
    assert threads.training_busy
    release.set()
    for _ in range(200):
        if not threads.training_busy:
            break
        await asyncio.sleep(0.01)
    assert not threads.training_busy


async def test_training_jobs_run_in_arrival_order(threads: WorkerThreads) -> None:
    order: list[int] = []
    await asyncio.gather(*(threads.run_training(order.append, i) for i in range(5)))
    assert order == [0, 1, 2, 3, 4]
