"""Faults: the worker killed mid-request, the network cut. The client fails typed and in time, never hangs,
and the worker never shows half of an upload (docs/security.md lists what each test holds)."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

import fedproto
from fedproto.server.profile import FIXTURE_KEY, REGISTERED_MODEL
from stress.proxy import CutProxy
from stress.worker_process import WorkerProcess, token_of
from tests.conftest import TOKENS, WorkerFactory, client_of, wait_until

#: Seconds within which a client must report a fault it can see (a closed connection).
PROMPT = 5.0
BIG = 40 * 1024 * 1024 // 4  # float32 elements: a 40 MiB tensor, 160 chunks of the conformance size


@pytest.fixture
def worker_process():
    with WorkerProcess(identities=1) as worker:
        yield worker


async def _killed_during(worker: WorkerProcess, request) -> float:
    """Run ``request(client, kill)``; return the seconds from the kill to the client's typed error."""
    killed_at: list[float] = []

    def kill(*_args: object) -> None:
        if not killed_at:
            worker.kill()
            killed_at.append(time.monotonic())

    client = await fedproto.AsyncClient.connect(worker.url, token=token_of(0), reconnect=False)
    try:
        with pytest.raises(fedproto.UnavailableError):  # ConnectionClosedError is one
            await asyncio.wait_for(request(client, kill), 30)
        assert killed_at
        return time.monotonic() - killed_at[0]
    finally:
        await asyncio.wait_for(client.close(), 10)


#: Local epochs of the fit that is killed: the fixture's 64 samples one at a time, far more batches than
#: the machine runs before the kill (the first progress event), however fast it is.
LONG_FIT_EPOCHS = 1_000_000


async def test_worker_killed_during_a_fit(worker_process: WorkerProcess) -> None:
    """A real fit (the registered model on the fixture dataset), killed once it reports progress."""
    progress: list[fedproto.FitProgressEvent] = []

    async def request(client: fedproto.AsyncClient, kill) -> None:
        config = fedproto.TrainConfig(
            model=REGISTERED_MODEL, loss_fn="cross_entropy", batch_size=1, epochs=LONG_FIT_EPOCHS, seed=0
        )
        await client.set_train_config(config)

        def on_progress(event: fedproto.FitProgressEvent) -> None:
            progress.append(event)
            kill()  # the worker is training right now: it sent this event from its fit loop

        await client.fit(FIXTURE_KEY, progress=on_progress, progress_every=16)

    assert await _killed_during(worker_process, request) < PROMPT
    assert progress, "the worker was killed before the fit ran"
    assert progress[0].batches_per_epoch == 64 and progress[0].epoch < LONG_FIT_EPOCHS


async def test_worker_killed_during_an_upload(worker_process: WorkerProcess) -> None:
    async def request(client: fedproto.AsyncClient, kill) -> None:
        await client.send(torch.zeros(BIG), id="big", progress=lambda d, t: d > t // 4 and kill())

    assert await _killed_during(worker_process, request) < PROMPT


async def test_worker_killed_during_a_download(worker_process: WorkerProcess) -> None:
    async def request(client: fedproto.AsyncClient, kill) -> None:
        await client.send(torch.zeros(BIG), id="big")
        await client.get("big", progress=lambda done, total: done > total // 4 and kill())

    assert await _killed_during(worker_process, request) < PROMPT


async def test_connection_dropped_mid_upload_leaves_no_object(make_worker: WorkerFactory) -> None:
    """Section 9.10: an upload cut short is never visible, not even in part."""
    worker = await make_worker(tokens=TOKENS)
    async with CutProxy(worker.port) as proxy:
        client = await fedproto.AsyncClient.connect(proxy.url, token=TOKENS["alice"], reconnect=False)
        try:
            with pytest.raises(fedproto.UnavailableError):
                await asyncio.wait_for(
                    client.send(torch.zeros(BIG), "cut", progress=lambda d, t: d > t // 3 and proxy.drop()),
                    PROMPT,
                )
        finally:
            await asyncio.wait_for(client.close(), 10)
    await wait_until(lambda: not any(c.session.uploads for c in worker._connections))
    async with client_of(worker, TOKENS["alice"]) as alice:
        assert await alice.list_objects() == []
    assert worker.objects.bytes_used("alice") == 0


async def test_network_black_hole_ends_in_the_deadline(make_worker: WorkerFactory) -> None:
    """No FIN, no RST, no bytes: the client's deadline ends the request with a typed error, in time."""
    worker = await make_worker(tokens=TOKENS)
    async with CutProxy(worker.port) as proxy:
        client = await fedproto.AsyncClient.connect(proxy.url, token=TOKENS["alice"], reconnect=False)
        try:
            proxy.black_hole()
            started = time.monotonic()
            with pytest.raises((fedproto.DeadlineExceededError, fedproto.UnavailableError)):
                await asyncio.wait_for(client.call_with("echo", [1], {}, timeout=1.0), 10)
            assert time.monotonic() - started < 1.0 + PROMPT
        finally:
            await asyncio.wait_for(client.close(), 15)


async def test_close_over_a_black_hole_returns_after_the_goodbye_wait(make_worker: WorkerFactory) -> None:
    """6.3.8: a Goodbye nobody answers ends the connection 5 s later, with no closing handshake after it."""
    worker = await make_worker(tokens=TOKENS)
    async with CutProxy(worker.port) as proxy:
        client = await fedproto.AsyncClient.connect(proxy.url, token=TOKENS["alice"], reconnect=False)
        proxy.black_hole()
        started = time.monotonic()
        await asyncio.wait_for(client.close(), 15)
        # 5 s of Goodbye wait; the closing handshake's own 10 s would make it 15
        assert time.monotonic() - started < 5.0 + PROMPT
    assert not client.connected
