"""The Python client against the Node worker: the payload digest is negotiated, not assumed (§7.5).

The Node worker (``node/dist``, built by ``make node-build``) computes ``sha256`` and ``xxh3-128``; the
Python client offers ``xxh3-128``, ``blake3``, ``sha256`` by default. Each test checks what was chosen and
that transfers both ways, inline and chunked, carry and check that algorithm's digest.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import torch

import fedproto
from fedproto import hashing
from interop.matrix import NODE_DIST, WorkerProcess

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")

#: Bound on each connection and transfer, so that a broken worker fails a test instead of hanging it.
WAIT = 60.0


@pytest.fixture(scope="module")
def node_worker() -> Iterator[WorkerProcess]:
    assert (NODE_DIST / "cli.js").exists(), "node/dist/cli.js is missing: run `make node-build`"
    with WorkerProcess("node") as running:
        yield running


def _raw(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


async def _round_trips(client: fedproto.AsyncClient, name: str) -> None:
    """An inline and a chunked tensor (over the profile's 4 MiB frame limit) there and back under ``name``."""
    await client.clear_objects()
    generator = torch.Generator().manual_seed(5)
    tensors = {
        "small": torch.arange(10, dtype=torch.float32),
        "big": torch.randn(5 << 18, generator=generator),
    }
    for object_id, tensor in tensors.items():
        ref = await client.send(tensor, object_id, tags=["#digest"])
        expected = hashing.digest(name, _raw(tensor))
        if name == "sha256":
            assert (ref.info.tensor.sha256, ref.info.tensor.digest) == (expected, b"")
        else:
            assert (ref.info.tensor.sha256, ref.info.tensor.digest) == (b"", expected)  # §7.5.8
        got = await client.get(object_id)
        assert got.dtype == tensor.dtype and _raw(got) == _raw(tensor)
    listed = await client.search("#digest")
    assert [o.id for o in listed] == list(tensors)
    await client.clear_objects()


async def test_the_default_offer_negotiates_xxh3_with_the_node_worker(node_worker: WorkerProcess) -> None:
    async with fedproto.AsyncClient.connect(node_worker.url, timeout=WAIT) as client:
        assert client.digest == "xxh3-128"
        assert client.server.server_name.startswith("fedproto-node")  # the other implementation
        await _round_trips(client, "xxh3-128")


async def test_an_algorithm_the_node_worker_lacks_falls_back_to_sha256(node_worker: WorkerProcess) -> None:
    async with fedproto.AsyncClient.connect(node_worker.url, timeout=WAIT, digests=("blake3",)) as client:
        assert client.digest == "sha256"  # blake3 is optional (§7.5.2): skipped, never a failed handshake
        await _round_trips(client, "sha256")


async def test_a_client_offering_nothing_gets_sha256_from_the_node_worker(node_worker: WorkerProcess) -> None:
    async with fedproto.AsyncClient.connect(node_worker.url, timeout=WAIT, digests=()) as client:
        assert client.digest == "sha256"
        await _round_trips(client, "sha256")
