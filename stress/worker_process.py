"""A worker under test in a process of its own, and the parent's handle on it (start, RSS, kill).

``python -m stress.worker_process --port 0 --identities N`` serves the conformance profile (docs/protocol.md
section 18: echo, sleep, the fixture dataset, a registered model) with the tokens ``tok-0`` .. ``tok-N-1``
mapped to identities ``id-0`` .. ``id-N-1``, prints ``READY <port>`` once it listens and stops on SIGTERM.
The worker's memory is read from ``/proc/<pid>/status`` by the parent, so measuring never disturbs it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["WorkerProcess", "rss_bytes", "token_of"]

ROOT = Path(__file__).resolve().parent.parent


def token_of(index: int) -> str:
    """The bearer token of client ``index`` (identity ``id-<index>``)."""
    return f"tok-{index}"


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (VmRSS in /proc/<pid>/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class WorkerProcess:
    """A worker subprocess on 127.0.0.1: ``with WorkerProcess(identities=20) as worker: worker.url``."""

    def __init__(
        self,
        *,
        identities: int = 1,
        max_connections: int = 1000,
        handshake_timeout: float | None = None,
        node: bool = False,
        startup_timeout: float = 60.0,
    ) -> None:
        self.identities = identities
        if node:  # the Node worker of node/ (built by make node-build), conformance profile, no tokens
            cli = str(ROOT / "node" / "dist" / "cli.js")
            command = ["node", cli, "serve", "--conformance", "--port", "0"]
        else:
            command = [sys.executable, "-m", "stress.worker_process", "--port", "0"]
            command += ["--identities", str(identities), "--max-connections", str(max_connections)]
            if handshake_timeout is not None:
                command += ["--handshake-timeout", str(handshake_timeout)]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # buffers above 128 KiB (chunks, tensors) get pages of their own, returned to the system when freed,
        # so that memory after the load measures what the worker still holds, not what glibc keeps cached
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        env.setdefault("MALLOC_ARENA_MAX", "2")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.port = self._wait_ready(startup_timeout, node)

    def _wait_ready(self, timeout: float, node: bool) -> int:
        assert self.process.stdout is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.process.stdout.readline()
            if not line:
                break
            words = line.split()
            if not node and words[:1] == ["READY"]:
                return int(words[1])
            if node and "ws://" in line:  # "listening on ws://127.0.0.1:PORT"
                return int(line.strip().rsplit(":", 1)[1].split()[0].rstrip("/"))
        self.kill()
        raise RuntimeError(f"the worker process did not start: {self.process.args}")

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    @property
    def url(self) -> str:
        """The worker's ws:// URL."""
        return f"ws://127.0.0.1:{self.port}"

    def rss(self) -> int:
        """The worker's resident memory now, in bytes."""
        return rss_bytes(self.pid)

    def alive(self) -> bool:
        """Whether the worker process is still running."""
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker (a crash: no goodbye, no close frames) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM the worker, wait for it (SIGKILL after 10 s); its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    from fedproto.server.profile import CONFORMANCE_LIMITS, conformance_worker

    limits = CONFORMANCE_LIMITS
    if args.handshake_timeout is not None:
        limits = dataclasses.replace(limits, handshake_timeout_seconds=args.handshake_timeout)
    tokens = {f"id-{i}": token_of(i) for i in range(args.identities)}
    worker = conformance_worker("stress", tokens=tokens, limits=limits)
    worker.max_connections = args.max_connections
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start(args.host, args.port)
    print(f"READY {worker.port}", flush=True)
    try:
        await stop.wait()
    finally:
        await worker.stop(grace=1.0)


def main() -> None:
    """Serve until SIGTERM (the child side of :class:`WorkerProcess`)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--identities", type=int, default=1)
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--handshake-timeout", type=float)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a connection log line per client would only cost time
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
