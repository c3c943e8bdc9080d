"""The ``fedproto`` command, run in-process against a worker served from a thread of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import WAIT, ThreadedWorker, free_port

import fedproto
from fedproto.cli import main
from fedproto.server.profile import conformance_worker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # tables are not wrapped


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"fedproto {command}: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def test_ping(threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ping", threaded_worker.url, "--count", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pong from conformance: seq=1 ")
    assert out[1].startswith("pong from conformance: seq=2 ")
    assert out[2].startswith("2 pings: ")
    assert len(out) == 3


def test_ls(threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]) -> None:
    with fedproto.Client(threaded_worker.url) as c:
        c.send(torch.zeros(2, 3), "stored-object", tags=["tag-one"])
    assert main(["ls", threaded_worker.url]) == 0
    out = capsys.readouterr().out
    assert "conformance" in out and "identity 'anonymous'" in out
    assert "conformance fixture" in out and "64" in out
    assert "stored-object" in out and "tag-one" in out and "[2, 3]" in out
    for method in ("echo", "fail", "notify", "sleep", "whoami"):
        assert method in out


def test_call_prints_json(threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["call", threaded_worker.url, "echo", "1", '"x"', "--kw", "k=2", "--kw", 'z={"a": [null]}']) == 0
    )
    assert json.loads(capsys.readouterr().out) == {"args": [1, "x"], "kwargs": {"k": 2, "z": {"a": [None]}}}
    assert main(["call", threaded_worker.url, "whoami"]) == 0
    assert json.loads(capsys.readouterr().out) == "anonymous"
    assert main(["call", threaded_worker.url, "sleep", "0"]) == 0
    assert json.loads(capsys.readouterr().out) == 0.0


def test_call_with_a_token(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    threaded = ThreadedWorker(conformance_worker(tokens={"alice": "tok-a"}))
    try:
        threaded.run(threaded.worker.start("127.0.0.1", 0))
        assert main(["call", threaded.url, "whoami", "--token", "tok-a"]) == 0
        assert json.loads(capsys.readouterr().out) == "alice"
        token_file = tmp_path / "token"
        token_file.write_text("alice tok-a\n")
        assert main(["call", threaded.url, "whoami", "--token-file", str(token_file)]) == 0
        assert json.loads(capsys.readouterr().out) == "alice"
        assert main(["call", threaded.url, "whoami", "--token", "wrong"]) == 1
        assert "UNAUTHENTICATED" in one_line_error(capsys, "call")
    finally:
        threaded.close()


def test_unreachable_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    assert main(["ping", url, "--count", "1", "--timeout", "2"]) == 1
    assert url in one_line_error(capsys, "ping")
    assert main(["ls", url, "--timeout", "2"]) == 1
    one_line_error(capsys, "ls")


def test_bad_json_argument_is_one_line(
    threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", threaded_worker.url, "echo", "x"]) == 1
    assert "not valid JSON" in one_line_error(capsys, "call")
    assert main(["call", threaded_worker.url, "echo", "--kw", "k={"]) == 1
    assert "not valid JSON" in one_line_error(capsys, "call")
    assert main(["call", threaded_worker.url, "echo", "--kw", "no-equals-sign"]) == 1
    one_line_error(capsys, "call")


def test_unknown_method_and_remote_errors_are_one_line(
    threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["call", threaded_worker.url, "no_such_method"]) == 1
    assert "METHOD_NOT_FOUND" in one_line_error(capsys, "call")
    assert main(["call", threaded_worker.url, "fail", "5", '"gone\\nfor good"']) == 1
    line = one_line_error(capsys, "call")
    assert "NOT_FOUND" in line and "gone for good" in line
    assert main(["call", threaded_worker.url, "sleep", "5", "--timeout", "0.2"]) == 1
    assert "DEADLINE_EXCEEDED" in one_line_error(capsys, "call")


def test_bad_option_values_are_one_line(
    threaded_worker: ThreadedWorker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ping", threaded_worker.url, "--count", "0"]) == 1
    one_line_error(capsys, "ping")
    assert main(["ping", "http://127.0.0.1:1"]) == 1
    one_line_error(capsys, "ping")


def usage_failure(argv: list[str]) -> int:
    """Exit status of a command that must fail before doing anything (returned or raised by argparse)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "0", "--dataset", "bad"],
        ["serve", "--port", "0", "--dataset", "=file.pt"],
        ["serve", "--port", "0", "--dataset", "key=/no/such/file.pt"],
        ["serve", "--port", "0", "--model", "bad"],
        ["serve", "--port", "0", "--model", "m=no_such_module_anywhere:factory"],
    ],
    ids=["no-equals", "no-key", "missing-file", "model-no-equals", "model-missing"],
)
def test_serve_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_failure(argv) in (1, 2)
    line = one_line_error(capsys, "serve")
    assert "--dataset" in line or "--model" in line or "no/such/file" in line


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_failure(["frobnicate"]) == 2
    assert "usage" in capsys.readouterr().err


def test_module_help_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fedproto", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=6 * WAIT,
    )
    assert result.returncode == 0, result.stderr
    for command in ("serve", "ls", "call", "ping"):
        assert command in result.stdout


# -- serve --worker / --methods ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--worker", "no_such_module_anywhere:make"], "no module named 'no_such_module_anywhere'"),
        (["--worker", "examples/absent.py:make_worker"], "no such file examples/absent.py"),
        (["--worker", "examples/colony_worker.py:absent"], "has no attribute 'absent'"),
        (["--worker", "fedproto:__version__"], "is a str, not a fedproto.Worker"),
        (["--methods", "json"], "--methods json: no function in it is marked @fedproto.rpc"),
        (["--conformance", "--worker", "examples/colony_worker.py:make_worker"], "give one"),
    ],
    ids=["no-module", "no-file", "no-attribute", "wrong-type", "no-methods", "two-workers"],
)
def test_serve_load_errors_are_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["serve", "--port", "0", *argv]) == 1
    assert message in one_line_error(capsys, "serve")


def start_serving(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``fedproto serve ARGV`` on a free port; returns the process and its URL once it listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedproto", "serve", "--port", str(port), *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    for _ in range(200):  # bounded: the lines before "listening on"
        line = process.stderr.readline()
        if "listening on ws" in line or not line:
            break
    assert f"listening on ws://127.0.0.1:{port}" in line, line
    # keep reading the log, or a chatty worker would block once the pipe's buffer is full
    threading.Thread(target=process.stderr.read, daemon=True).start()
    return process, f"ws://127.0.0.1:{port}"


def stop_serving(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(WAIT)


def test_serve_a_workers_file_and_methods_module(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("coordinator s3cret\n")
    process, url = start_serving(
        [
            "--worker",
            "examples/colony_worker.py:make_worker",
            "--methods",
            "examples/colony_methods.py",
            "--token-file",
            str(tokens),
            "--id",
            "renamed",
        ]
    )
    try:
        assert main(["call", url, "get_colony_id", "--token", "s3cret"]) == 0
        assert json.loads(capsys.readouterr().out) == 7
        assert main(["call", url, "greet", '"bob"', "--token", "s3cret"]) == 0
        assert json.loads(capsys.readouterr().out) == "hello Bob, from colony 7"
        assert main(["ls", url, "--token", "s3cret"]) == 0
        out = capsys.readouterr().out
        assert "renamed" in out and "identity 'coordinator'" in out and "xor" in out
        assert "colony_size" in out and "_helper" not in out
        assert main(["call", url, "get_colony_id"]) == 1  # the token file applies to the loaded worker
        assert "UNAUTHENTICATED" in one_line_error(capsys, "call")
    finally:
        stop_serving(process)


def test_serve_expose_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    methods = tmp_path / "failing_methods.py"
    methods.write_text(
        "import fedproto\n\n@fedproto.rpc\ndef broken() -> None:\n    raise OSError('/etc/x')\n"
    )
    hidden, hidden_url = start_serving(["--methods", str(methods)])
    try:
        assert main(["call", hidden_url, "broken"]) == 1
        line = one_line_error(capsys, "call")
        assert "INTERNAL" in line and "error id" in line and "/etc/x" not in line
    finally:
        stop_serving(hidden)
    exposed, exposed_url = start_serving(["--methods", str(methods), "--expose-errors"])
    try:
        assert main(["call", exposed_url, "broken"]) == 1
        assert "OSError: /etc/x" in one_line_error(capsys, "call")
    finally:
        stop_serving(exposed)


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_serve_max_connections_bad_values_are_one_line(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "0", "--max-connections", value]) == 1
    line = one_line_error(capsys, "serve")
    assert "--max-connections expects a whole number >= 0" in line and repr(value) in line


async def test_serve_max_connections_refuses_one_more_with_503(capsys: pytest.CaptureFixture[str]) -> None:
    """§14.2.11 from the command line: with --max-connections 2 the third client is refused."""
    process, url = start_serving(["--conformance", "--max-connections", "2"])
    clients = []
    try:
        for _ in range(2):
            clients.append(await fedproto.AsyncClient.connect(url, reconnect=False))
        with pytest.raises(fedproto.UnavailableError, match="503"):
            await fedproto.AsyncClient.connect(url, reconnect=False)
        await clients.pop().close()
        for _ in range(100):  # bounded: the worker sees the close a moment later
            try:
                clients.append(await fedproto.AsyncClient.connect(url, reconnect=False))
                break
            except fedproto.UnavailableError:
                await asyncio.sleep(0.05)
        assert len(clients) == 2, "a freed slot must be served again"
        assert await clients[-1].ping() >= 0
    finally:
        for client in clients:
            await client.close()
        stop_serving(process)


def test_serve_help_lists_max_connections(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--max-connections N" in out and "HTTP 503" in out


def test_ls_says_none_for_empty_lists_and_keeps_the_header_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    threaded = ThreadedWorker(fedproto.Worker("empty"))
    try:
        threaded.run(threaded.worker.start("127.0.0.1", 0))
        assert main(["ls", threaded.url]) == 0
    finally:
        threaded.close()
    lines = capsys.readouterr().out.splitlines()
    assert "datasets: none" in lines and "objects: none" in lines and "methods: none" in lines
    [caps] = [line for line in lines if line.startswith("capabilities: ")]
    assert caps.endswith("objects, training")  # one line, however narrow the terminal
    assert not any("┏" in line for line in lines)  # no empty boxes


def test_serve_model_factories_load_from_a_py_file_too(tmp_path: Path) -> None:
    from fedproto.cli import _model_factory

    module = tmp_path / "my_models.py"
    module.write_text("import torch\n\ndef make_mlp():\n    return torch.nn.Linear(2, 1)\n")
    name, factory = _model_factory(f"mlp={tmp_path / 'my_models.py'}:make_mlp")
    assert name == "mlp" and isinstance(factory(), torch.nn.Linear)
    with pytest.raises(ValueError, match="has no attribute 'absent'"):
        _model_factory(f"mlp={tmp_path / 'my_models.py'}:absent")
