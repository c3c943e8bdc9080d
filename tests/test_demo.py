"""``fedproto demo`` end to end: real worker processes, FedAvg, the central baseline and the plot."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

import fedproto.cli
import fedproto.demo


def fedproto_children() -> set[int]:
    """Processes whose parent is this one and that run fedproto (Linux: read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"fedproto" in command:
            found.add(int(entry.name))
    return found


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")


@needs_proc
def test_demo_trains_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = fedproto_children()
    plot = tmp_path / "d.png"
    status = fedproto.demo.main(["--rounds", "2", "--workers", "2", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert status == 0, err
    found = re.search(r"federated accuracy (0\.\d+|1\.000) vs central (0\.\d+|1\.000)", out)
    assert found is not None, out
    federated, central = float(found[1]), float(found[2])
    assert 0.5 < federated <= 1 and 0.5 < central <= 1
    assert "worker-1" in out and "worker-2" in out and "worker-3" not in out
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert fedproto_children() == before, "worker processes were left running"


@needs_proc
def test_a_worker_that_does_not_start_is_one_line_and_no_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str, port: int, *_: object) -> list[str]:
        if name == "worker-2":
            return [sys.executable, "-c", "import sys; print('no luck', file=sys.stderr); sys.exit(3)"]
        # A process that would wait, unlike its sibling: it must be stopped too.
        return [sys.executable, "-c", "import time, fedproto; time.sleep(60)"]

    monkeypatch.setattr(fedproto.demo, "_worker_command", broken)
    before = fedproto_children()
    status = fedproto.demo.main(["--workers", "2", "--no-plot"])
    err = capsys.readouterr().err
    assert status == 1
    assert err.strip().splitlines() == [
        "fedproto demo: worker-2 exited with status 3 before listening: no luck"
    ]
    assert fedproto_children() == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--workers", "0"], "--workers must be between 1 and 16"),
        (["--epochs", "0"], "--epochs must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fedproto.demo.main(argv) == 1
    assert capsys.readouterr().err == f"fedproto demo: {message}\n"


def test_the_cli_passes_options_to_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert fedproto.cli.main(["demo", "--rounds", "0"]) == 1
    assert "--rounds must be at least 1" in capsys.readouterr().err
