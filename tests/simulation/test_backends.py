from __future__ import annotations

import asyncio
import dataclasses
import os
import sys

import pytest

from fedproto import AsyncClient
from fedproto.simulation.backends import HostStartError, host_specs, local_hosts, ray_hosts

pytest.importorskip("sklearn")

TOKEN = "sim-token"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("clients", "workers"), [(10, 1), (10, 3), (7, 7), (1000, 2)])
def test_host_specs_cover_every_client_once_in_nearly_equal_slices(clients, workers):
    specs = host_specs(clients=clients, workers=workers, partition="iid", alpha=1.0, seed=0)
    keys = [key for spec in specs for key in spec.keys]
    assert keys == [f"client-{i:05d}" for i in range(clients)]
    sizes = [spec.stop - spec.first for spec in specs]
    assert max(sizes) - min(sizes) <= 1
    assert len({spec.worker_id for spec in specs}) == workers


@pytest.mark.parametrize("workers", [0, 11])
def test_host_specs_refuse_more_hosts_than_clients_or_none(workers):
    with pytest.raises(ValueError, match="workers must be between 1 and clients"):
        host_specs(clients=10, workers=workers, partition="iid", alpha=1.0, seed=0)


async def _datasets(url: str) -> list[tuple[str, int]]:
    async with AsyncClient.connect(url, token=TOKEN, reconnect=False) as client:
        return [(d.key, d.sample_count) for d in await client.datasets()]


def test_local_hosts_serve_their_clients_and_are_stopped_by_pid(tmp_path):
    specs = host_specs(clients=12, workers=2, partition="dirichlet", alpha=0.5, seed=1)
    with local_hosts(specs, TOKEN, log_dir=tmp_path) as hosts:
        pids = [host.pid for host in hosts]
        assert all(pid is not None for pid in pids)
        for host, spec in zip(hosts, specs, strict=True):
            assert host.url.startswith("ws://127.0.0.1:")
            held = asyncio.run(_datasets(host.url))
            assert [key for key, _ in held] == [*spec.keys, "test"]
            assert all(count > 0 for _, count in held)
    assert all(_gone(pid) for pid in pids)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim-host-0.log", "sim-host-1.log"]


def test_a_host_that_cannot_start_is_reported_and_the_others_are_stopped(tmp_path, monkeypatch):
    specs = host_specs(clients=4, workers=2, partition="iid", alpha=0.5, seed=1)
    broken = dataclasses.replace(specs[1], partition="shards")  # the host's partition() refuses it
    started = []
    import fedproto.simulation.backends as backends

    original = backends._HostProcess

    class Recording(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.process)

    monkeypatch.setattr(backends, "_HostProcess", Recording)
    with (
        pytest.raises(
            HostStartError, match=r"host sim-host-1 exited with status 1: .*unknown partition 'shards'"
        ),
        local_hosts([specs[0], broken], TOKEN, log_dir=tmp_path),
    ):
        pytest.fail("the hosts must not be yielded")
    assert len(started) == 2 and all(p.poll() is not None for p in started)


def test_ray_hosts_without_ray_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    specs = host_specs(clients=2, workers=1, partition="iid", alpha=0.5, seed=0)
    with pytest.raises(ImportError, match=r"pip install 'fedproto\[ray\]'"), ray_hosts(specs, TOKEN):
        pytest.fail("no host without Ray")
