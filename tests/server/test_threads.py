"""The worker's threads: blocking calls off the event loop, model work on one training thread."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent.futures import Future

import pytest
import torch

import fedproto
from fedproto.server.threads import WorkerThreads, warm_up_training


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
    started, release = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        release.wait(10)

    future = threads.submit_training(job)
    assert threads.training_busy
    # cancelled while still queued, a job never runs and rightly stops counting: wait until it runs
    assert await asyncio.to_thread(started.wait, 10)
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


async def test_warm_up_runs_on_the_training_thread_and_is_never_busy(threads: WorkerThreads) -> None:
    release = threading.Event()
    blocker = threads._training_executor.submit(release.wait, 10)  # holds the thread: warm-up queues
    warm = threads.warm_up()
    assert not threads.training_busy  # requests are routed as for an idle worker
    release.set()
    await asyncio.wrap_future(blocker)
    assert await asyncio.wait_for(asyncio.wrap_future(warm), 60) is None


def test_warm_up_pays_pytorchs_first_optimizer_import() -> None:
    # In a fresh process: the first optimizer imports torch._dynamo (seconds); after the warm-up it is
    # there already, so a client's first train config does not pay for it.
    script = (
        "import sys, fedproto.server.threads as t\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "t.warm_up_training()\n"
        "assert 'torch._dynamo' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


async def test_a_worker_warms_up_once_when_it_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[WorkerThreads] = []

    def warm_up(self: WorkerThreads) -> Future[None]:
        calls.append(self)
        done: Future[None] = Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(WorkerThreads, "warm_up", warm_up)
    worker = fedproto.Worker("warm")
    for _ in range(2):
        await worker.start("127.0.0.1", 0)
        await worker.stop(grace=0)
    assert calls == [worker.threads]


def test_warm_up_leaves_the_global_random_generator_alone() -> None:
    state = torch.random.get_rng_state()
    warm_up_training()
    assert torch.equal(torch.random.get_rng_state(), state)
