"""The idle timeout closes quiet connections with 1001, but never one with work in flight."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import fedproto
from fedproto.server.profile import CONFORMANCE_LIMITS, conformance_worker


@pytest.fixture
async def quick_idle():
    worker = conformance_worker(limits=dataclasses.replace(CONFORMANCE_LIMITS, idle_timeout_seconds=0.3))
    await worker.start("127.0.0.1", 0)
    try:
        yield worker
    finally:
        await worker.stop(grace=0.5)


async def test_quiet_connection_is_closed_1001(quick_idle: fedproto.Worker) -> None:
    client = await fedproto.AsyncClient.connect(quick_idle.url, reconnect=False)
    try:
        ws = client._ws
        assert ws is not None
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1001
    finally:
        await client.close()


async def test_work_in_flight_is_not_idleness(quick_idle: fedproto.Worker) -> None:
    async with fedproto.AsyncClient.connect(quick_idle.url) as client:
        assert await client.call("sleep", 1.0) == 1.0  # three idle periods pass during the call
        assert await client.ping() >= 0
