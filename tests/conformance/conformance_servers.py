"""Servers for the suite's own tests: the reference worker and proxies, on a loop in a background thread.

The suite's runner owns the main thread's event loops (one per case), so every server the tests start
runs on a separate loop in a daemon thread and is driven through :meth:`BackgroundLoop.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from conformance import Runner, RunResult, Settings, all_cases, select
from fedproto.server.profile import conformance_worker
from fedproto.server.worker import Worker

T = TypeVar("T")

TOKENS = {"alice": "tok-alice", "bob": "tok-bob"}


class BackgroundLoop:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="conformance-servers", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the background loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def reference_worker(background: BackgroundLoop, tokens: Mapping[str, str] | None = None) -> Iterator[Worker]:
    """A conformance-profile reference worker on loopback, stopped on exit."""
    worker = conformance_worker(tokens=tokens)
    background.run(worker.start("127.0.0.1", 0))
    try:
        yield worker
    finally:
        background.run(worker.stop(0.5), timeout=30)


def run_suite(
    url: str,
    patterns: list[str] | tuple[str, ...] = (),
    *,
    token: str = "",
    token2: str = "",
    profile: str = "all",
    max_examples: int = 8,
    expected: list[str] | None = None,
    seed: int | None = 1,
) -> RunResult:
    """Run the selected cases against ``url`` from the calling (main) thread."""
    settings = Settings(
        url=url,
        token=token,
        token2=token2,
        timeout=5.0,
        max_examples=max_examples,
        seed=seed,
        shrink_seconds=2.0,
    )
    cases = select(all_cases(), profile, list(patterns))
    assert cases, f"no case matches {patterns}"
    return Runner(settings, cases, expected_failures=expected or []).run()
