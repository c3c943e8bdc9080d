"""``fedproto fedavg``: a coordinator process killed mid-round resumes to the uninterrupted run's weights;
bad settings end in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import ThreadedWorker
from safetensors.torch import load_file

import fedproto
import fedproto.cli

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ROUNDS = 6
#: Bound on one coordinator process (it imports torch, connects and trains every round).
PROCESS_TIMEOUT = 240.0


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="worker .* requires no token")
        yield


def _data(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(samples, 4, generator=generator)
    targets = (features[:, 0] > 0).long() + (features[:, 1] > 0).long()
    return features, targets


@pytest.fixture
def workers() -> Iterator[list[ThreadedWorker]]:
    """Two workers on loopback threads, each holding three client datasets (c0, c1, c2) and a test set."""
    threaded: list[ThreadedWorker] = []
    try:
        for w in range(2):
            worker = fedproto.Worker(f"w{w}", shutdown_grace=0.5)
            for k in range(3):
                worker.add_dataset(_data(1500 + 500 * k, seed=10 * w + k), key=f"c{k}")
            worker.add_dataset(_data(300, seed=99), key="test")
            t = ThreadedWorker(worker)
            threaded.append(t)
            t.run(worker.start("127.0.0.1", 0))
        yield threaded
    finally:
        for t in threaded:
            t.close()


def _command(workers: list[ThreadedWorker], run_dir: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "fedproto", "fedavg", "--model", "command_models:classifier"]
    for t in workers:
        command += ["--worker", f"{t.url}=c0,c1,c2"]
    command += ["--eval-dataset-key", "test", "--rounds", str(ROUNDS), "--fraction-fit", "0.5"]
    command += ["--strategy", "fedadam", "--eta", "0.02", "--optimizer-arg", "momentum=0.9"]
    command += ["--batch-size", "16", "--seed", "4", "--run-dir", str(run_dir), *extra]
    return command


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(HERE), environment.get("PYTHONPATH", "")])
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def _manifest_round(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "manifest.json").read_text())["round"])
    except (OSError, ValueError, KeyError):
        return 0


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    assert _manifest_round(run_dir) == ROUNDS
    return load_file(run_dir / f"weights-{ROUNDS:06d}.safetensors")


def _wait_idle(workers: list[ThreadedWorker]) -> None:
    deadline = time.monotonic() + 30
    while any(t.worker.training_busy for t in workers):
        assert time.monotonic() < deadline, "a worker kept training after its coordinator died"
        time.sleep(0.05)


def test_a_coordinator_killed_mid_round_resumes_to_the_same_weights(
    workers: list[ThreadedWorker], tmp_path: Path
) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = subprocess.run(
        _command(workers, whole, "--quiet"),
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _wait_idle(workers)

    coordinator = subprocess.Popen(
        _command(workers, cut, "--quiet"),
        cwd=REPO,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Round 2 checkpointed, then a worker training for round 3: kill the coordinator there.
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not (_manifest_round(cut) >= 2 and any(t.worker.training_busy for t in workers)):
            assert coordinator.poll() is None, coordinator.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the coordinator never reached round 3"
            time.sleep(0.005)
        os.kill(coordinator.pid, signal.SIGKILL)
        coordinator.wait(timeout=30)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
        if coordinator.stderr is not None:
            coordinator.stderr.close()
    assert coordinator.returncode == -signal.SIGKILL
    interrupted_at = _manifest_round(cut)
    assert 2 <= interrupted_at < ROUNDS
    _wait_idle(workers)

    resumed = subprocess.run(
        [sys.executable, "-m", "fedproto", "fedavg", "--resume", str(cut)],
        cwd=REPO,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming after round {interrupted_at} of {ROUNDS}" in resumed.stderr
    assert f"round   {ROUNDS}  sampled 3  finished 3" in resumed.stderr

    expected, got = _final(whole), _final(cut)
    assert list(got) == list(expected) and list(got)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name
    history = [
        json.loads(p.read_text())["history"] for p in (whole / "state-000006.json", cut / "state-000006.json")
    ]
    assert [[c["client"] for c in r["clients"]] for r in history[0]] == [
        [c["client"] for c in r["clients"]] for r in history[1]
    ]
    assert (cut / "accuracy.png").read_bytes().startswith(b"\x89PNG")


@pytest.fixture
def one_worker(threaded_worker: ThreadedWorker, monkeypatch: pytest.MonkeyPatch) -> ThreadedWorker:
    monkeypatch.syspath_prepend(str(HERE))
    return threaded_worker


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = fedproto.cli.main(["fedavg", *argv])
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--fraction-fit", "0"], "fraction_fit must be in (0, 1], got 0.0"),
        (["--fraction-fit", "1.5"], "fraction_fit must be in (0, 1], got 1.5"),
        (["--max-transfers", "-1"], "max_transfers must be an integer between 1 and"),
        (["--min-fit-clients", "3"], "min_fit_clients must be an integer between 1 and 2, got 3"),
        (["--min-available-clients", "3"], "min_available_clients must be an integer between 0 and 2, got 3"),
        (
            ["--strategy", "median", "--streaming"],
            "the median strategy needs every update of a round at once",
        ),
        (["--strategy", "fedavg", "--mu", "0.1"], "--mu do not apply to the fedavg strategy"),
        (["--optimizer-arg", "momentum"], "--optimizer-arg expects NAME=JSON"),
    ],
)
def test_bad_settings_are_one_line(
    one_worker: ThreadedWorker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    argv = ["--worker", f"{one_worker.url}=conformance,other", "--model", "command_models:classifier"]
    status, err = _cli([*argv, "--run-dir", str(tmp_path / "run"), *options], capsys)
    assert status == 1
    assert err.count("\n") == 1 and err.startswith("fedproto fedavg: ") and message in err, err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_resume_refusals_are_one_line(
    one_worker: ThreadedWorker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = ["--worker", f"{one_worker.url}=conformance", "--model", "command_models:classifier"]
    status, err = _cli(
        [*argv, "--rounds", "1", "--run-dir", str(run), "--batch-size", "8", "--quiet"], capsys
    )
    assert status == 0, err
    assert "done: 1 rounds" in err

    status, err = _cli([*argv, "--run-dir", str(run)], capsys)
    assert (status, err.count("\n")) == (1, 1) and "already holds a run" in err

    status, err = _cli(["--resume", str(run), "--lr", "0.5"], capsys)
    assert (status, err.count("\n")) == (1, 1) and "--lr cannot change" in err

    settings = json.loads((run / "run.json").read_text())
    settings["extra"]["command"]["model"] = "command_models:other_classifier"
    (run / "run.json").write_text(json.dumps(settings))
    status, err = _cli(["--resume", str(run), "--rounds", "2"], capsys)
    assert (status, err.count("\n")) == (1, 1) and "holds a run of another model" in err

    status, err = _cli(["--resume", str(tmp_path / "nothing")], capsys)
    assert (status, err.count("\n")) == (1, 1) and "no run.json" in err

    status, err = _cli(["--model", "command_models:classifier"], capsys)
    assert (status, err) == (1, "fedproto fedavg: give at least one --worker URL\n")


def test_unreadable_options_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["--strategy", "nope"], "argument --strategy: invalid choice: 'nope'"),
        (["--fraction-fit", "x"], "argument --fraction-fit: invalid float value: 'x'"),
    ):
        with pytest.raises(SystemExit) as caught:
            fedproto.cli.main(["fedavg", *argv])
        assert caught.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("fedproto fedavg: ") and message in err, err
