"""Where a simulation's hosts run: ``local`` worker processes, or ``ray`` actors.

Either way each host is a real :class:`~fedproto.Worker` serving protocol v1 on a WebSocket and holding
the datasets of a slice of the clients (see :mod:`fedproto.simulation.host`); the coordinator talks to
it with the ordinary client, so a simulation exercises the same code as a real federation.

- :func:`local_hosts` starts one ``python -m fedproto.simulation.host`` process per host on 127.0.0.1,
  waits for each one's ``READY <url>`` line, and stops them by PID (SIGTERM, then SIGKILL) whatever
  happens.
- :func:`ray_hosts` starts one Ray actor per host; each actor builds its worker and serves it on the
  actor's own event loop, and reports its URL. Without ``address`` it starts a private Ray instance
  on this machine (no dashboard, ``num_cpus`` CPUs) and shuts it down at the end; with ``address`` it
  joins that cluster and only disconnects from it. Ray is an optional dependency (``fedproto[ray]``).

Both are context managers that yield the :class:`Host` list.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedproto.simulation.host import READY, TOKEN_ENV, HostSpec, build_host_worker

__all__ = ["BACKENDS", "Host", "HostStartError", "host_specs", "local_hosts", "ray_available", "ray_hosts"]

log = logging.getLogger("fedproto.simulation")

#: The backends :func:`fedproto.simulation.run` knows.
BACKENDS = ("local", "ray")
#: Seconds a host may take to start listening (it imports torch and scikit-learn first).
START_TIMEOUT = 120.0
#: Seconds a host process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class HostStartError(RuntimeError):
    """A host did not start (its process exited, or it did not listen in time)."""


@dataclass(frozen=True)
class Host:
    """A running host: its URL, the dataset keys of the clients it holds, its process id (local only)."""

    url: str
    worker_id: str
    keys: tuple[str, ...]
    pid: int | None = None


def host_specs(*, clients: int, workers: int, partition: str, alpha: float, seed: int) -> list[HostSpec]:
    """Split ``clients`` into ``workers`` contiguous slices of nearly equal size, one spec per host."""
    if not 1 <= workers <= clients:
        raise ValueError(f"workers must be between 1 and clients ({clients}), got {workers}")
    bounds = [clients * index // workers for index in range(workers + 1)]
    return [
        HostSpec(
            worker_id=f"sim-host-{index}",
            clients=clients,
            partition=partition,
            alpha=alpha,
            seed=seed,
            first=bounds[index],
            stop=bounds[index + 1],
        )
        for index in range(workers)
    ]


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# -- local processes ----------------------------------------------------------------------------------


class _HostProcess:
    """One host process: started, read until its READY line, stopped by PID."""

    def __init__(self, spec: HostSpec, token: str, log_dir: Path) -> None:
        self.spec = spec
        self.log_path = log_dir / f"{spec.worker_id}.log"
        environment = dict(os.environ)
        environment[TOKEN_ENV] = token
        # One compute thread each: several hosts share the cores, and a small model gains nothing more.
        environment.setdefault("OMP_NUM_THREADS", "1")
        environment.setdefault("MKL_NUM_THREADS", "1")
        command = [sys.executable, "-m", "fedproto.simulation.host", "--spec", spec.to_json()]
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=sink, env=environment
            )
        self.url: str | None = None
        self._ready = threading.Event()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name=f"{spec.worker_id}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Find the READY line, then keep draining stdout so that the host never blocks on it."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").strip()
            if self.url is None and line.startswith(READY + " "):
                self.url = line.split(maxsplit=1)[1]
                self._ready.set()
        self._ended = True
        self._ready.set()  # the process ended (or closed stdout): stop waiting

    def wait_ready(self, deadline: float) -> str:
        self._ready.wait(max(0.0, deadline - time.monotonic()))
        if self.url is not None:
            return self.url
        status = self.process.poll()
        if status is None and self._ended:
            # stdout closed: the process is on its way out; its status comes in a moment
            with contextlib.suppress(subprocess.TimeoutExpired):
                status = self.process.wait(timeout=5.0)
        said = self.last_words()
        what = (
            f"exited with status {status}" if status is not None else f"did not listen in {START_TIMEOUT:g} s"
        )
        raise HostStartError(f"host {self.spec.worker_id} {what}" + (f": {said}" if said else ""))

    def last_words(self) -> str:
        with contextlib.suppress(OSError):
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
            return lines[-1].strip() if lines else ""
        return ""


def _stop_processes(hosts: Sequence[_HostProcess]) -> None:
    """SIGTERM every host process by PID, wait, then SIGKILL the ones still running."""
    for host in hosts:
        if host.process.poll() is None:
            with contextlib.suppress(OSError):
                host.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for host in hosts:
        try:
            host.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                host.process.kill()
            host.process.wait()
        if host.process.stdout is not None:
            host.process.stdout.close()
        host._reader.join(timeout=1.0)


@contextlib.contextmanager
def local_hosts(
    specs: Sequence[HostSpec],
    token: str,
    *,
    log_dir: Path | None = None,
    start_timeout: float = START_TIMEOUT,
) -> Iterator[list[Host]]:
    """Run one host process per spec on 127.0.0.1; yield them once all listen; always stop them.

    Each host's stderr goes to ``<log_dir>/<worker_id>.log`` (a temporary folder when ``log_dir`` is
    None); the last line of it is in the :class:`HostStartError` raised when a host does not start.
    """
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fedproto-sim-")))
        log_dir.mkdir(parents=True, exist_ok=True)
        started: list[_HostProcess] = []
        try:
            for spec in specs:
                started.append(_HostProcess(spec, token, log_dir))
            deadline = time.monotonic() + start_timeout
            hosts = [
                Host(
                    url=process.wait_ready(deadline),
                    worker_id=spec.worker_id,
                    keys=tuple(spec.keys),
                    pid=process.process.pid,
                )
                for process, spec in zip(started, specs, strict=True)
            ]
            log.info("%d host processes listening: %s", len(hosts), ", ".join(h.url for h in hosts))
            yield hosts
        finally:
            _stop_processes(started)


# -- Ray actors ---------------------------------------------------------------------------------------


class HostActor:
    """The body of a Ray actor that hosts one worker (made a Ray actor class by :func:`ray_hosts`).

    Its methods are coroutines, so Ray runs the actor on an asyncio event loop of its own: the worker
    serves on that loop, between the actor's calls, until :meth:`stop`.
    """

    def __init__(self, spec_json: str, token: str) -> None:
        self.spec = HostSpec.from_json(spec_json)
        self.worker = build_host_worker(self.spec, token)

    async def start(self, host: str) -> str:
        """Listen on ``host`` (a free port) and return the worker's URL."""
        await self.worker.start(host, 0)
        if host in ("0.0.0.0", "::"):
            import ray.util

            return f"ws://{ray.util.get_node_ip_address()}:{self.worker.port}"
        return self.worker.url

    async def stop(self) -> None:
        """Stop serving (in-flight requests get one second)."""
        await self.worker.stop(grace=1.0)


@contextlib.contextmanager
def ray_hosts(
    specs: Sequence[HostSpec],
    token: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    listen_host: str = "127.0.0.1",
    start_timeout: float = START_TIMEOUT,
) -> Iterator[list[Host]]:
    """Run one Ray actor per spec, each serving its host's worker; yield them; always clean up.

    Without ``address`` a private Ray instance starts here (``num_cpus`` CPUs, default all of them, no
    dashboard) and is shut down at the end; with ``address`` (``"auto"`` or ``"HOST:PORT"``) this
    process joins that cluster and only disconnects at the end. When Ray was already initialised by the
    caller, it is left as it was. Each actor asks for an equal share of the cluster's CPUs (at most
    one). On a cluster of several machines, pass ``listen_host="0.0.0.0"``: the actors then report
    their node's address (fedproto must be installed on every node).
    """
    try:
        import ray
    except ImportError:
        raise ImportError("the ray backend needs Ray: pip install 'fedproto[ray]'") from None
    initialised_here = False
    actors: list[Any] = []
    try:
        if not ray.is_initialized():
            if address is None:
                ray.init(
                    num_cpus=num_cpus or os.cpu_count() or 1,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            initialised_here = True
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        share = min(1.0, cpus / max(1, len(specs)))
        actor_class = ray.remote(num_cpus=share, max_restarts=0)(HostActor)
        for spec in specs:
            actors.append(actor_class.remote(spec.to_json(), token))
        try:
            urls = ray.get([actor.start.remote(listen_host) for actor in actors], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError:
            raise HostStartError(f"the Ray host actors did not listen within {start_timeout:g} s") from None
        except ray.exceptions.RayError as exc:
            raise HostStartError(
                f"a Ray host actor did not start: {str(exc).strip().splitlines()[-1]}"
            ) from None
        hosts = [
            Host(url=str(url), worker_id=spec.worker_id, keys=tuple(spec.keys))
            for url, spec in zip(urls, specs, strict=True)
        ]
        log.info("%d Ray host actors listening: %s", len(hosts), ", ".join(h.url for h in hosts))
        yield hosts
    finally:
        if actors:
            with contextlib.suppress(Exception):
                ray.get([actor.stop.remote() for actor in actors], timeout=STOP_TIMEOUT)
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
        if initialised_here:
            ray.shutdown()
