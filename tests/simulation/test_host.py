from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedproto.simulation.host import TOKEN_ENV, HostSpec, build_host_worker, main
from fedproto.simulation.partition import load_digits_split, partition

pytest.importorskip("sklearn")


def _spec(**changes):
    values = {
        "worker_id": "h",
        "clients": 30,
        "partition": "dirichlet",
        "alpha": 0.3,
        "seed": 5,
        "first": 10,
        "stop": 20,
    }
    values.update(changes)
    return HostSpec(**values)


def test_spec_round_trips_through_json_and_names_its_clients():
    spec = _spec()
    assert HostSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json())["first"] == 10
    assert spec.keys == [f"client-{i:05d}" for i in range(10, 20)]


@pytest.mark.parametrize(("first", "stop"), [(-1, 3), (5, 5), (6, 5), (0, 31)])
def test_spec_refuses_an_empty_or_outside_slice(first, stop):
    with pytest.raises(ValueError, match="a host holds clients"):
        _spec(first=first, stop=stop)


def test_host_worker_holds_exactly_its_clients_partition():
    spec = _spec()
    worker = build_host_worker(spec, "secret")
    data = load_digits_split(spec.seed)
    parts = partition(data.y_train, spec.clients, scheme="dirichlet", alpha=spec.alpha, seed=spec.seed)
    assert sorted(worker.datasets) == [*spec.keys, "test"]
    assert np.array_equal(worker.datasets["test"].targets.numpy(), data.y_test)
    for index in range(spec.first, spec.stop):
        held = worker.datasets[f"client-{index:05d}"]
        assert np.array_equal(held.targets.numpy(), data.y_train[parts[index]])
        assert np.array_equal(held.features.numpy(), data.x_train[parts[index]])
    assert worker.authenticate("secret") == "coordinator"
    assert worker.authenticate("other") is None
    assert worker.training_threads == 1


def test_main_refuses_to_run_without_a_token(monkeypatch, capsys):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["--spec", _spec().to_json()]) == 2
    assert TOKEN_ENV in capsys.readouterr().err


def test_main_refuses_a_bad_spec(monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, "t")
    assert main(["--spec", json.dumps({"worker_id": "h"})]) == 2
    assert "bad --spec" in capsys.readouterr().err


def test_process_prints_ready_with_its_url_and_stops_on_sigterm():
    env = dict(os.environ, **{TOKEN_ENV: "t"})
    process = subprocess.Popen(
        [sys.executable, "-m", "fedproto.simulation.host", "--spec", _spec().to_json()],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        assert line[0] == "READY" and line[1].startswith("ws://127.0.0.1:")
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
