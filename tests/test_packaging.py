"""The wheel as a user gets it: built from the sources, installed in a fresh environment, then used.

The wheel is built from a copy of the sources (so setuptools' ``build/`` and ``*.egg-info`` never land in
the working tree) with ``pip wheel --no-deps --no-build-isolation``, and installed with ``--no-deps`` into
a new virtual environment. Its dependencies (torch above all, which must not be downloaded) come from the
development environment's site-packages through a ``.pth`` line: ``venv --system-site-packages`` would
expose the base interpreter's packages, not the development environment's. That directory's own ``.pth``
files are not run, so the editable install of the working tree stays out of sight and every import of
fedproto resolves to the installed wheel. The installed ``fedproto`` command then serves the conformance
profile on loopback, lists it with ``fedproto ls`` and runs the suite's core profile against it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
#: What the wheel is built from (everything pyproject.toml packages).
SOURCES = ("pyproject.toml", "README.md", "fedproto", "generated", "conformance")
#: The name the suite (the folder conformance/) is installed under.
SUITE = "fedproto_conformance"
PROTOS = sorted(p.name for p in (ROOT / "proto" / "fedproto_pb" / "v1").glob("*.proto"))
#: Seconds the installed worker may take to print where it listens.
READY_SECONDS = 30


def _run(*args: str | Path, cwd: Path, timeout: float = 60, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
        "--no-build-isolation", "-w", work / "dist", source, cwd=work, timeout=120,
    )  # fmt: skip
    (built,) = (work / "dist").glob("fedproto-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """A fresh environment with the wheel installed; returns its bin directory."""
    env = wheel.parent.parent / "env"
    _run(sys.executable, "-m", "venv", "--without-pip", env, cwd=wheel.parent)
    python = env / "bin" / "python"
    _run(
        sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check",
        "--no-deps", "--no-index", wheel, cwd=wheel.parent, timeout=120,
    )  # fmt: skip
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=env).strip()
    (Path(site) / "_development_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


@pytest.fixture(scope="module")
def worker_url(installed: Path) -> Iterator[str]:
    """``fedproto serve --conformance`` from the installed environment, on a free loopback port."""
    # its log goes to a file: a pipe nobody reads once the worker is up would fill and stall it
    log = installed.parent / "worker.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [str(installed / "fedproto"), "serve", "--conformance", "--port", "0"],
            cwd=installed.parent,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        found = None
        while found is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            found = re.search(r"listening on (ws://\S+)", log.read_text())
        assert found is not None, f"the installed worker did not say where it listens:\n{log.read_text()}"
        yield found.group(1)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def test_every_package_folder_is_packaged() -> None:
    # pyproject.toml lists the packages (one is renamed, so they cannot be found by folder name)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: Path(path) for name, path in config["package-dir"].items()}
    folders["fedproto"] = Path("fedproto")
    expected = {
        ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
        for name, folder in folders.items()
        for init in (ROOT / folder).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert sorted(config["packages"]) == sorted(expected)


def test_the_wheel_carries_the_schema_the_typing_markers_and_the_suite(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {f"fedproto_pb/v1/{proto}" for proto in PROTOS} <= names
    assert {"fedproto/py.typed", "fedproto_pb/py.typed"} <= names
    assert f"{SUITE}/cli.py" in names and f"{SUITE}/cases/training.py" in names
    top_level = {name.split("/")[0] for name in names if not name.startswith("fedproto-")}
    assert top_level == {"fedproto", "fedproto_pb", SUITE}
    # hypothesis is the suite's, not the library's
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: hypothesis")]
    assert 'Requires-Dist: hypothesis>=6.100; extra == "conformance"' in requirements, requirements
    assert all("; extra == " in line for line in requirements), requirements


#: Run by the installed interpreter as if hypothesis were not installed (None in sys.modules makes every
#: import of it fail): the library must work, and ``fedproto conformance`` must say what to install.
_WITHOUT_HYPOTHESIS = """
import importlib.resources, sys
sys.modules["hypothesis"] = None
import fedproto, fedproto_pb
print(fedproto.__file__)
print(importlib.resources.files("fedproto_pb.v1").joinpath("training.proto").read_text().count("message "))
from fedproto.cli import main
sys.exit(main(["conformance", "ws://127.0.0.1:9"]))
"""


def test_the_installed_library_needs_no_hypothesis_and_the_suite_says_so(installed: Path) -> None:
    done = subprocess.run(
        [str(installed / "python"), "-c", _WITHOUT_HYPOTHESIS],
        cwd=installed,
        capture_output=True,
        text=True,
        timeout=60,
    )
    where, messages = done.stdout.split()
    # fedproto is the wheel's (not the working tree's), and its schema files are readable as resources
    assert Path(where).is_relative_to(installed.parent), where
    assert int(messages) == (ROOT / "proto" / "fedproto_pb" / "v1" / "training.proto").read_text().count(
        "message "
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "fedproto conformance needs hypothesis, which the library does not install: "
        "pip install 'fedproto[conformance]'"
    ]


def test_the_installed_command_lists_a_worker_and_runs_the_core_suite(
    installed: Path, worker_url: str
) -> None:
    listing = _run(installed / "fedproto", "ls", worker_url, cwd=installed)
    assert "conformance" in listing and "echo" in listing
    report = _run(
        installed / "fedproto", "conformance", worker_url, "--profile", "core", "--max-examples", "5",
        "--no-live", cwd=installed, timeout=120,
    )  # fmt: skip
    assert re.search(r"\d+ passed, 0 failed", report), report
    # the suite also runs as a module under its installed name (outside the repository: no conformance/)
    listed = _run(installed / "python", "-m", SUITE, "--list", "--profile", "core", cwd=installed)
    assert "handshake/" in listed
