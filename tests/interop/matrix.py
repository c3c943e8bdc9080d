"""The interop matrix: {Python client, Node client} x {Python worker, Node worker}.

Each cell starts nothing itself: :class:`WorkerProcess` runs a worker in the conformance profile
(docs/protocol.md §18) in its own process on a free loopback port (``--port 0``) and waits for its
``listening on ws://...`` line; :func:`run_cell` runs one client's interop script against it
(``tests/interop/script.py`` or ``node/dist/interop.js``) and parses the JSON line it prints.

``.venv/bin/python tests/interop/matrix.py`` runs the four cells and prints a table of steps and
timings (what docs/interop.md reports); ``tests/interop/test_matrix.py`` asserts every step.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NODE_DIST = REPO / "node" / "dist"
READY = re.compile(r"listening on (wss?://\S+)")
#: Bound on a worker's start (the Python worker imports torch) and on one cell's script.
START_TIMEOUT = 60.0
CELL_TIMEOUT = 150.0

KINDS = ("python", "node")
#: Every step and the checks both clients make in it (the Node script makes a few more).
STEPS: dict[str, tuple[str, ...]] = {
    "handshake": (
        "version_1",
        "identity_anonymous",
        "conformance_profile",
        "objects_and_chunked",
        "limits_set",
        "ping",
    ),
    "echo": (
        "map_of_args_and_kwargs",
        "args_unchanged",
        "kwargs_order_kept",
        "kwargs_unchanged",
        "fixture_dataset_listed",
        "hooks_listed",
    ),
    "tensor_1k": (
        "reply_nbytes",
        "reply_sha256",
        "dtype_float32",
        "shape",
        "sha256_intact",
        "delete_freed_nbytes",
    ),
    "tensor_64m": (
        "reply_nbytes",
        "reply_sha256",
        "dtype_float32",
        "shape",
        "sha256_intact",
        "delete_freed_nbytes",
    ),
    "objects": (
        "list_in_insertion_order",
        "count",
        "search_one_tag",
        "search_all_tags",
        "delete_freed_bytes",
        "get_deleted_not_found",
        "list_after_delete",
        "clear_removed",
    ),
    "typed_errors": (
        "MALFORMED",
        "UNSUPPORTED_VERSION",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "NOT_FOUND",
        "METHOD_NOT_FOUND",
        "INVALID_ARGUMENT",
        "ALREADY_EXISTS",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "CANCELLED",
        "DEADLINE_EXCEEDED",
        "INTERNAL",
        "UNAVAILABLE",
        "UNIMPLEMENTED",
        "DATA_LOSS",
        "method_not_found",
        "fail_out_of_range_invalid_argument",
    ),
    "cancel": (
        "cancelled",
        "cancel_within_1s",
        "deadline_exceeded_typed",
        "deadline_within_bound",
        "connection_still_serves",
    ),
    "notification": ("call_returns_null", "delivered_before_reply"),
    "pipelined": ("all_replied", "each_reply_its_own", "distinct"),
}


def server_command(kind: str) -> list[str]:
    """The command that serves the conformance profile on a port the OS picks."""
    if kind == "python":
        return [sys.executable, "-m", "fedproto", "serve", "--conformance", "--port", "0"]
    return ["node", str(NODE_DIST / "cli.js"), "serve", "--conformance", "--port", "0"]


def client_command(kind: str, url: str) -> list[str]:
    """The command that runs one client's interop script against ``url``."""
    if kind == "python":
        return [sys.executable, str(REPO / "tests" / "interop" / "script.py"), url]
    return ["node", str(NODE_DIST / "interop.js"), url]


class WorkerProcess:
    """A worker in its own process: started by ``with``, ready once it printed its URL, always stopped
    (SIGTERM, then SIGKILL, by PID)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cmd = server_command(kind)
        self.url = ""
        self.lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Both streams together: the Python worker logs its URL on stderr, the Node worker prints it.
        self._proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )
        ready = threading.Event()

        def read() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            for raw in self._proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                if len(self.lines) < 200:
                    self.lines.append(line)
                match = READY.search(line)
                if match and not self.url:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True, name=f"interop-{self.kind}-worker").start()
        try:
            ready.wait(START_TIMEOUT)
            if not self.url:
                output = "\n".join(self.lines[-20:])
                raise RuntimeError(f"the {self.kind} worker did not start: {' '.join(self.cmd)}\n{output}")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cell(client: str, url: str) -> tuple[dict[str, Any], float]:
    """Run ``client``'s interop script against ``url``: its JSON result and the wall time it took."""
    cmd = client_command(client, url)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=CELL_TIMEOUT, check=False)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.decode(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(
            f"{' '.join(cmd)} printed no result (exit {done.returncode}):\n"
            + done.stderr.decode(errors="replace")[-3000:]
        )
    return json.loads(lines[-1]), seconds


def failures(result: dict[str, Any]) -> list[str]:
    """Everything wrong with one cell's result: missing steps or checks, errors, failed checks."""
    problems = []
    steps = result.get("steps", {})
    for name, checks in STEPS.items():
        step = steps.get(name)
        if step is None:
            problems.append(f"{name}: step missing")
            continue
        if step.get("error"):
            problems.append(f"{name}: {step['error']}")
        missing = [c for c in checks if c not in step["checks"]]
        if missing:
            problems.append(f"{name}: checks missing: {', '.join(missing)}")
        failed = [c for c, ok in step["checks"].items() if not ok]
        if failed:
            problems.append(f"{name}: failed: {', '.join(failed)}")
    return problems


@contextlib.contextmanager
def workers() -> Iterator[dict[str, WorkerProcess]]:
    """Both workers, started and stopped together."""
    with WorkerProcess("python") as python, WorkerProcess("node") as node:
        yield {"python": python, "node": node}


def main() -> int:
    """Run the four cells; print a markdown table of steps (seconds) per cell and the cell's wall time."""
    rows = []
    with workers() as running:
        for server in KINDS:
            for client in KINDS:
                result, seconds = run_cell(client, running[server].url)
                rows.append((client, server, result, seconds))
    header = ["client", "worker", *STEPS, "64 MiB MB/s", "script", "ok"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for client, server, result, seconds in rows:
        steps = result["steps"]
        cells = [f"{steps[name]['seconds']:.3f}" if name in steps else "-" for name in STEPS]
        mbps = steps.get("tensor_64m", {}).get("info", {}).get("round_trip_mb_s", "-")
        ok = not failures(result)
        print(f"| {client} | {server} | " + " | ".join(cells) + f" | {mbps} | {seconds:.1f} s | {ok} |")
    problems = [(c, s, failures(r)) for c, s, r, _ in rows if failures(r)]
    for client, server, found in problems:
        print(f"{client} client x {server} worker: " + "; ".join(found), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
