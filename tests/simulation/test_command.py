from __future__ import annotations

import subprocess
import sys

import pytest

import fedproto.simulation.engine as engine
from fedproto.cli import main as fedproto_main
from fedproto.simulation.command import main

pytest.importorskip("sklearn")


@pytest.fixture
def nothing_starts(monkeypatch):
    """Fail the test if any host would start: bad settings are refused before anything runs."""

    def refuse(*args, **kwargs):
        pytest.fail("a host was started despite bad settings")

    monkeypatch.setattr(engine, "local_hosts", refuse)
    monkeypatch.setattr(engine, "ray_hosts", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fraction", "0"], "fraction must be a number in (0, 1], got 0.0"),
        (["--fraction", "1.5"], "fraction must be a number in (0, 1], got 1.5"),
        (["--clients", "5", "--min-fit-clients", "6"], "min_fit_clients=6 clients must train each round"),
        (["--clients", "2000"], "cannot give each of 2000 clients a sample: there are only 1437 samples"),
        (["--clients", "0"], "clients must be an integer >= 1, got 0"),
        (["--rounds", "0"], "rounds must be an integer >= 1, got 0"),
        (["--clients", "3", "--workers", "4"], "workers=4 hosts cannot share 3 clients"),
        (["--strategy", "fedsgd"], "unknown strategy 'fedsgd'; choose among fedavg, fedprox"),
        (["--partition", "shards"], "unknown partition 'shards'; choose among iid, dirichlet"),
        (["--backend", "dask"], "unknown backend 'dask'; choose among local, ray"),
        (["--partition", "dirichlet", "--alpha", "0"], "alpha must be a number > 0, got 0.0"),
        (["--partition", "dirichlet", "--alpha", "-2"], "alpha must be a number > 0, got -2.0"),
        (["--address", "auto"], "address joins a Ray cluster: it needs backend 'ray'"),
        (["--resume"], "resume needs run_dir"),
        (["--clients", "ten"], "argument --clients: invalid int value: 'ten'"),
        (["--colour", "red"], "unrecognized arguments: --colour red"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2_before_anything_starts(argv, message, capsys, nothing_starts):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("fedproto simulate: ") and message in err
    assert err.count("\n") == 1


def test_backend_ray_without_ray_installed_is_refused(monkeypatch, capsys, nothing_starts):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when it is not installed
    assert main(["--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "fedproto simulate: backend 'ray' needs Ray, which is not installed: pip install 'fedproto[ray]'\n"
    )


def test_resume_of_a_directory_that_never_ran_is_refused(tmp_path, capsys, nothing_starts):
    assert main(["--run-dir", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_fedproto_simulate_is_a_subcommand(capsys, nothing_starts):
    assert fedproto_main(["simulate", "--fraction", "0"]) == 2
    assert capsys.readouterr().err.startswith("fedproto simulate: fraction must be")
    assert fedproto_main(["--log-level", "WARNING", "simulate", "--backend", "dask"]) == 2


def test_help_lists_every_option():
    done = subprocess.run(
        [sys.executable, "-m", "fedproto", "simulate", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for option in (
        "--clients",
        "--fraction",
        "--rounds",
        "--backend",
        "--address",
        "--partition",
        "--alpha",
        "--strategy",
        "--run-dir",
        "--resume",
        "--seed",
        "--workers",
    ):
        assert option in done.stdout
