from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fedproto.simulation.engine as engine
from fedproto.federated.checkpoint import RunDirectory
from fedproto.simulation import SimulationConfig, SimulationConfigError, digits_mlp, run
from fedproto.simulation.command import main as simulate

pytest.importorskip("sklearn")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def host_pids(monkeypatch):
    """The PIDs of every local host process the test's runs start."""
    pids: list[int] = []
    real = engine.local_hosts

    def recording(*args, **kwargs):
        manager = real(*args, **kwargs)

        class Recorded:
            def __enter__(self):
                hosts = manager.__enter__()
                pids.extend(host.pid for host in hosts)
                return hosts

            def __exit__(self, *exc):
                return manager.__exit__(*exc)

        return Recorded()

    monkeypatch.setattr(engine, "local_hosts", recording)
    return pids


# -- settings -----------------------------------------------------------------------------------------


def test_config_defaults_and_clients_per_round():
    config = SimulationConfig()
    assert (config.clients, config.fraction, config.backend, config.partition, config.strategy) == (
        100,
        0.1,
        "local",
        "iid",
        "fedavg",
    )
    assert config.sampled == 10
    assert SimulationConfig(clients=1000, fraction=0.1).sampled == 100
    assert SimulationConfig(clients=10, fraction=0.01, min_fit_clients=3).sampled == 3
    assert SimulationConfig(clients=100, fraction=0.29).sampled == 29


@pytest.mark.parametrize(
    "name", ["fedavg", "fedprox", "fedadam", "fedyogi", "median", "trimmed-mean", "trimmed_mean"]
)
def test_every_strategy_name_is_taken(name):
    assert SimulationConfig(strategy=name).strategy == name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fraction": 0}, "fraction must be a number in (0, 1]"),
        ({"fraction": True}, "fraction must be a number in (0, 1]"),
        ({"clients": 5, "min_fit_clients": 6}, "min_fit_clients=6"),
        ({"clients": 2.5}, "clients must be an integer >= 1"),
        (
            {"strategy": "krum"},
            "unknown strategy 'krum'; choose among fedavg, fedprox, fedadam, fedyogi, median, trimmed-mean",
        ),
        ({"partition": "pathological"}, "unknown partition 'pathological'"),
        ({"backend": "slurm"}, "unknown backend 'slurm'"),
        ({"partition": "dirichlet", "alpha": 0}, "alpha must be a number > 0"),
        ({"partition": "dirichlet", "alpha": float("inf")}, "alpha must be a number > 0"),
        ({"alpha": 0.3}, "alpha is the Dirichlet concentration: it needs partition 'dirichlet', not 'iid'"),
        ({"lr": -0.1}, "lr must be a number > 0"),
        ({"hidden": ()}, "hidden must be a non-empty sequence"),
        ({"hidden": (64, 0)}, "hidden must be a non-empty sequence"),
        ({"address": "auto"}, "address joins a Ray cluster"),
        ({"backend": "ray", "address": "auto", "num_cpus": 2}, "num_cpus sizes a private Ray instance"),
        ({"resume": True}, "resume needs run_dir"),
    ],
)
def test_bad_settings_raise_before_anything_starts(settings, message):
    with pytest.raises(SimulationConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(**settings)


def test_alpha_belongs_to_the_dirichlet_partition():
    assert SimulationConfig(partition="dirichlet").alpha == engine.DEFAULT_ALPHA
    assert SimulationConfig(partition="dirichlet", alpha=0.2).concentration == 0.2
    iid = SimulationConfig()
    assert iid.alpha is None and iid.run_settings()["alpha"] is None


def test_digits_mlp_is_seeded_and_sized():
    a, b = digits_mlp(3), digits_mlp(3)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(digits_mlp(4)[0].weight, a[0].weight)
    wide = digits_mlp(0, (32, 16))
    assert [tuple(t.shape) for t in wide.state_dict().values()] == [
        (32, 64),
        (32,),
        (16, 32),
        (16,),
        (10, 16),
        (10,),
    ]


# -- whole runs -------------------------------------------------------------------------------------------


def test_local_backend_trains_sampled_clients_on_two_hosts(host_pids):
    seen = []
    result = run(
        clients=20,
        workers=2,
        fraction=0.5,
        rounds=2,
        partition="dirichlet",
        alpha=1.0,
        seed=3,
        progress=lambda record, accuracy: seen.append((record.round, accuracy)),
    )
    assert [r.round for r in result.records] == [1, 2] and [s[0] for s in seen] == [1, 2]
    for record in result.records:
        assert record.sampled == 10 and record.finished == 10 and record.available == 20
        names = [c.client for c in record.clients]
        assert len(set(names)) == 10 and all(name.startswith("client-") for name in names)
        assert {c.worker for c in record.clients} == {"sim-host-0", "sim-host-1"}
        assert record.accuracy is not None  # the hosts evaluated it too, on the same test digits
        assert record.accuracy == pytest.approx(result.accuracies[record.round - 1], abs=1e-6)
    assert result.records[0].clients != result.records[1].clients  # another sample each round
    assert result.accuracy == result.accuracies[-1] > result.initial_accuracy + 0.05
    assert result.client_sizes[0] >= 1
    assert len(host_pids) == 2 and all(_gone(pid) for pid in host_pids)


def test_resume_through_the_command_line_continues_the_same_run(tmp_path, capsys, host_pids):
    run_dir = tmp_path / "run"
    common = [
        "--clients",
        "12",
        "--workers",
        "1",
        "--fraction",
        "0.5",
        "--seed",
        "5",
        "--strategy",
        "fedadam",
        "--partition",
        "dirichlet",
        "--alpha",
        "0.5",
        "--run-dir",
        str(run_dir),
    ]
    assert simulate([*common, "--rounds", "1"]) == 0
    assert RunDirectory(run_dir).load().round == 1
    # again without --resume: refused, and the directory is left as it was
    capsys.readouterr()
    assert simulate([*common, "--rounds", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # other settings: refused
    assert (
        simulate([*common[:-2], "--run-dir", str(run_dir), "--rounds", "2", "--resume", "--seed", "6"]) == 2
    )
    assert "other settings (seed 5 -> 6)" in capsys.readouterr().err
    assert simulate([*common, "--rounds", "2", "--resume", "--strategy", "median"]) == 2
    assert "other settings (strategy 'fedadam' -> 'median')" in capsys.readouterr().err
    assert simulate([*common, "--rounds", "2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "1 rounds in" in out
    resumed = RunDirectory(run_dir).load()
    assert resumed.round == 2 and [r.round for r in resumed.history] == [1, 2]
    # the same two rounds in one go give the same weights: resuming loses nothing
    whole = run(
        clients=12,
        workers=1,
        fraction=0.5,
        seed=5,
        strategy="fedadam",
        partition="dirichlet",
        alpha=0.5,
        rounds=2,
    )
    for name, tensor in whole.weights.items():
        torch.testing.assert_close(resumed.weights[name], tensor)
    assert len(host_pids) == 3 and all(_gone(pid) for pid in host_pids)


def test_ray_backend_end_to_end_and_shut_down():
    ray = pytest.importorskip("ray")
    result = run(
        clients=6, workers=2, fraction=0.5, rounds=2, backend="ray", num_cpus=2, seed=1, evaluate=False
    )
    assert [r.finished for r in result.records] == [3, 3]
    assert {c.worker for r in result.records for c in r.clients} <= {"sim-host-0", "sim-host-1"}
    assert all(r.accuracy is None for r in result.records)  # evaluate=False: the coordinator's only
    assert len(result.accuracies) == 2
    assert not ray.is_initialized()


def test_ray_backend_joins_a_running_cluster_and_leaves_it_running():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedproto",
                "simulate",
                "--backend",
                "ray",
                "--address",
                address,
                "--clients",
                "4",
                "--workers",
                "1",
                "--fraction",
                "0.5",
                "--rounds",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "on 1 ray hosts; 2 clients per round" in done.stdout
        # the simulation only disconnected: the cluster it joined still runs, with its CPUs free again
        assert ray.is_initialized()
        assert ray.available_resources().get("CPU") == 2.0
    finally:
        ray.shutdown()
