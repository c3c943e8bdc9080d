"""The load bench (stress/load.py), short: 20 clients x 50 mixed requests (make stress: 200 x 500)."""

from __future__ import annotations

from stress.load import memory_returned, run_load
from stress.worker_process import WorkerProcess


async def test_every_request_answered_once_and_memory_returns() -> None:
    with WorkerProcess(identities=20) as worker:
        result = await run_load(worker, clients=20, requests=50, primer=20)
        assert worker.alive()
    assert not result.failures, result.failures[:5]
    assert result.requests == 20 * 50
    assert set(result.kinds) == {"call", "ping", "send", "get", "list", "count", "chunked", "cancel"}
    assert memory_returned(result), result.summary()
