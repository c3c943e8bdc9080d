from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fedproto.simulation.engine as engine
from fedproto.cli import main as fedproto_main
from fedproto.simulation.command import main

pytest.importorskip("sklearn")

ALPHA_WITH_IID = "alpha is the Dirichlet concentration: it needs partition 'dirichlet', not 'iid'"


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
        (["--alpha", "0.3"], ALPHA_WITH_IID),
        (["--partition", "iid", "--alpha", "0.3"], "alpha is the Dirichlet concentration"),
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


# -- through the installed ``fedproto`` entry point ------------------------------------------------------

#: The console script that installing fedproto puts beside this interpreter (pyproject's [project.scripts]).
SCRIPT = Path(sys.executable).parent / "fedproto"


def _script(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the package (make venv)"
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fraction", "1.5"], "fraction must be a number in (0, 1], got 1.5"),
        (["--clients", "0"], "clients must be an integer >= 1, got 0"),
        (["--alpha", "0.3"], ALPHA_WITH_IID),
        (["--resume"], "resume needs run_dir (the run directory to resume)"),
    ],
)
def test_the_fedproto_script_refuses_bad_options_in_one_line(argv, message):
    done = _script("simulate", *argv)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == f"fedproto simulate: {message}\n"


def test_the_entry_point_refuses_the_ray_backend_without_ray(monkeypatch, capsys, nothing_starts):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when it is not installed
    assert fedproto_main(["simulate", "--backend", "ray", "--clients", "4"]) == 2
    assert capsys.readouterr().err == (
        "fedproto simulate: backend 'ray' needs Ray, which is not installed: pip install 'fedproto[ray]'\n"
    )


def test_the_fedproto_script_runs_a_simulation(tmp_path):
    done = _script(
        "simulate",
        "--clients",
        "6",
        "--workers",
        "1",
        "--fraction",
        "0.5",
        "--rounds",
        "2",
        "--partition",
        "dirichlet",
        "--alpha",
        "1",
        "--seed",
        "2",
        "--run-dir",
        str(tmp_path / "run"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("6 clients (dirichlet, alpha 1, ")
    assert lines[0].endswith("on 1 local hosts; 3 clients per round, strategy fedavg")
    assert lines[1].startswith("2 rounds in ") and lines[2].startswith("test accuracy ")
    rounds = [line for line in done.stderr.splitlines() if line.startswith("round ")]
    assert [line.split()[1] for line in rounds] == ["1", "2"]
    assert all("3/3 clients" in line for line in rounds)
    assert (tmp_path / "run" / "simulation.json").is_file()
