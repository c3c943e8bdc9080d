"""The worker's threads: a pool for blocking calls, and one training thread for all model work.

Nothing slow runs on the event loop: exposed methods that block run on the pool, and loading, fitting,
evaluating and weight changes run, in arrival order, on the training thread.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["WorkerThreads", "warm_up_training"]


class WorkerThreads:
    """A pool of ``max_threads`` threads for blocking calls, and one training thread.

    The training thread gets ``training_threads`` PyTorch intra-op threads (default: what PyTorch had);
    creating this object sets the creating thread's own intra-op threads to 1, so that the two never
    compete for the cores.
    """

    def __init__(self, name: str, *, max_threads: int = 32, training_threads: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix=f"fedproto-{name}")
        # All model work (load, fit, evaluate, weights) runs on one thread, which gets PyTorch's intra-op
        # threads; the serving thread keeps one. OpenMP keeps a team of threads per calling thread, and
        # once the teams of two threads outnumber the cores, libgomp stops spinning at its barriers and
        # every small parallel region pays for a sleep and a wake-up: a small model's fit ran 3-4x slower
        # in a worker than in a script. This must happen before the serving thread's first parallel
        # region (loading a dataset, say), which is why it is done when the worker is created.
        self._training_jobs = 0  # queued or running on the training thread
        self._training_jobs_lock = threading.Lock()
        self.training_threads = training_threads or torch.get_num_threads()
        torch.set_num_threads(1)
        self._training_executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix=f"fedproto-{name}-train",
            initializer=torch.set_num_threads,
            initargs=(self.training_threads,),
        )

    def warm_up(self) -> Future[None]:
        """Pay PyTorch's one-time training costs on the training thread now, not in a client's first fit.

        The worker awaits it before it listens (see :func:`warm_up_training`); it does not count in
        :attr:`training_busy`.
        """
        return self._training_executor.submit(warm_up_training)

    def submit_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        """Queue model work on the training thread (one for all identities, in arrival order).

        The job counts as running until the thread has finished it, even when whoever awaits the
        returned future gives up earlier: :attr:`training_busy` must not say "idle" while a cancelled
        fit is still winding down between two batches.
        """
        future = self._training_executor.submit(functools.partial(func, *args, **kwargs))
        with self._training_jobs_lock:
            self._training_jobs += 1
        future.add_done_callback(self._training_job_done)
        return asyncio.wrap_future(future)

    def _training_job_done(self, _future: Future[Any]) -> None:  # runs on the training thread
        with self._training_jobs_lock:
            self._training_jobs -= 1

    async def run_training(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run model work on the training thread and return its result (see :meth:`submit_training`)."""
        return await self.submit_training(func, *args, **kwargs)

    @property
    def training_busy(self) -> bool:
        """Whether the training thread is running (or has queued) model work."""
        return self._training_jobs > 0

    async def run_sync(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run blocking work on the pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))


def warm_up_training() -> None:
    """One optimizer step on a tiny model: what a process pays once, before its first real fit.

    Measured with pyinstrument on a fresh process configuring the demo's train config: the first
    optimizer a process constructs imports ``torch._dynamo`` (PyTorch wraps ``Optimizer.__init__``,
    ``zero_grad`` and ``step`` in ``torch._disable_dynamo``, which imports it lazily), 1.5 to 2.5 s of a
    worker's first ``set_train_config`` on two busy CPUs, against 3 ms for every later one. The first
    backward pass also starts autograd's engine. None of this depends on the client's model, so a
    worker does it once, when it starts.
    """
    # skip_init: no draw from PyTorch's global generator, which the worker's owner or a client's seeded
    # model building may be using on another thread at this very moment
    model = torch.nn.utils.skip_init(torch.nn.Linear, 2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    optimizer.zero_grad()
    model(torch.zeros(1, 2)).sum().backward()
    optimizer.step()
