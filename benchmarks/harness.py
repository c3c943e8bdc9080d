"""What every workload shares: timing, subprocess servers and their memory, results and targets.

- :func:`measure` / :func:`ameasure` time a callable after warm-up runs, a bounded number of times (by
  count and by seconds), and return :class:`Stats` (median, quartiles, min, max).
- :class:`ServerProcess` starts a server in its own process, waits for the ``READY`` line it prints,
  and always stops it (terminate, then kill) when the ``with`` block ends.
- :func:`rss` / :func:`reset_peak` read and reset a process's resident memory (``/proc/<pid>/status``
  VmRSS and VmHWM; writing ``5`` to ``/proc/<pid>/clear_refs`` resets VmHWM), so the peak of one
  transfer can be told apart from everything the process did before.
- :class:`Target` is a target the benchmark checks, with its verdict; :func:`write_result` stores a
  workload's result as ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
DOCS_DIR = REPO / "docs"
MIB = 1 << 20

# --------------------------------------------------------------------------------------------------
# timing


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements (seconds unless said otherwise)."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int
    samples: list[float] = field(default_factory=list)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self, *, keep_samples: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not keep_samples or len(self.samples) > 64:
            data.pop("samples")
        return data


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) with linear interpolation between closest ranks."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(samples: Sequence[float]) -> Stats:
    """Median, quartiles and extremes of a non-empty list of samples."""
    if not samples:
        raise ValueError("no samples")
    values = list(samples)
    return Stats(
        median=statistics.median(values),
        q1=percentile(values, 25),
        q3=percentile(values, 75),
        min=min(values),
        max=max(values),
        n=len(values),
        samples=values,
    )


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float | None = None,
    min_repeats: int = 1,
) -> Stats:
    """Time ``fn()`` after ``warmup`` untimed calls: ``repeats`` times, or fewer (but at least
    ``min_repeats``) once ``max_seconds`` of timed runs have passed."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        if (
            max_seconds is not None
            and len(samples) >= min_repeats
            and time.perf_counter() - started > max_seconds
        ):
            break
    return stats(samples)


async def ameasure(
    fn: Callable[[], Awaitable[Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    max_seconds: float | None = None,
    min_repeats: int = 1,
) -> Stats:
    """:func:`measure` for coroutine functions."""
    for _ in range(warmup):
        await fn()
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t0)
        if (
            max_seconds is not None
            and len(samples) >= min_repeats
            and time.perf_counter() - started > max_seconds
        ):
            break
    return stats(samples)


# --------------------------------------------------------------------------------------------------
# memory of a process


def rss(pid: int | None = None) -> dict[str, int]:
    """``{"rss": VmRSS, "hwm": VmHWM}`` of a process, in bytes (the current process by default)."""
    path = f"/proc/{pid if pid is not None else 'self'}/status"
    out = {"rss": 0, "hwm": 0}
    with open(path) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                out["hwm"] = int(line.split()[1]) * 1024
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU seconds a process has used so far (all its threads)."""
    with open(f"/proc/{pid if pid is not None else 'self'}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int | None = None) -> bool:
    """Reset a process's VmHWM to its current RSS; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid if pid is not None else 'self'}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """The peak resident memory a block of code adds to some processes, above what they held before,
    and the CPU seconds they spent meanwhile.

    ``with PeakMemory({"client": None, "server": pid}) as peak: ...`` then ``peak.added["server"]`` and
    ``peak.cpu["server"]``.
    """

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before: dict[str, int] = {}
        self.added: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self.exact = True

    def __enter__(self) -> PeakMemory:
        for name, pid in self.pids.items():
            self.exact = reset_peak(pid) and self.exact
            self.before[name] = rss(pid)["rss"]
            self.cpu[name] = cpu_seconds(pid)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, pid in self.pids.items():
            self.added[name] = max(0, rss(pid)["hwm"] - self.before[name])
            self.cpu[name] = cpu_seconds(pid) - self.cpu[name]


# --------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(threads: int | None = None, **extra: str) -> dict[str, str]:
    """The environment for a child process: the repo importable, optional thread caps, no telemetry."""
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "generated")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    env.update(extra)
    return env


class ServerProcess:
    """A server in its own process: started by ``with``, ready once it printed ``READY``, always stopped.

    The command must print one line starting with ``READY`` on stdout once it accepts connections;
    everything it prints after that goes to a log file, shown when something fails.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
        name: str = "server",
    ) -> None:
        self.cmd = list(cmd)
        self.env = env if env is not None else child_env()
        self.ready_timeout = ready_timeout
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_line = ""
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by stop()
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        self._drain: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = Path(self._log.name).read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=self._log, env=self.env, cwd=REPO
        )
        assert self.proc.stdout is not None
        lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip()
                if not found.is_set():
                    lines.append(line)
                    if line.startswith("READY"):
                        self.ready_line = line
                        found.set()
                else:
                    self._log.write(raw)
            found.set()

        self._drain = threading.Thread(target=read, daemon=True, name=f"drain-{self.name}")
        self._drain.start()
        found.wait(self.ready_timeout)
        if not self.ready_line:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start: {' '.join(self.cmd)}\n{chr(10).join(lines[-10:])}\n{tail}"
            )
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._drain is not None:
            self._drain.join(2)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_json(
    cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, name: str = "child"
) -> Any:
    """Run a command to completion (killed after ``timeout`` seconds) and parse its last stdout line."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else child_env(),
        cwd=REPO,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(
            f"{name} timed out after {timeout:.0f} s\n{err.decode(errors='replace')[-3000:]}"
        ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{name} failed (exit {proc.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')[-3000:]}"
        )
    return json.loads(lines[-1])


def python() -> list[str]:
    """The interpreter running the benchmarks (the project's venv)."""
    return [sys.executable]


def node_worker() -> list[str]:
    """The command of the Node worker under test (``benchmarks/node_worker_server.mjs``), which needs
    ``node`` and the built package (``make node-build``)."""
    script = BENCH_DIR / "node_worker_server.mjs"
    if shutil.which("node") is None or not (REPO / "node" / "dist" / "worker" / "index.js").exists():
        raise RuntimeError("the Node worker needs node and node/dist: run `make node-build` first")
    return ["node", str(script)]


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class Target:
    """A target the benchmark checks: ``measured <op> threshold``; None when it could not be measured."""

    name: str
    measured: float | None
    op: str
    threshold: float
    unit: str = "x"
    detail: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None or math.isnan(self.measured):
            return None
        return self.measured >= self.threshold if self.op == ">=" else self.measured <= self.threshold

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["met"] = self.met
        return data


@dataclass
class Ratio:
    """A measured ratio of fedproto against a baseline (``> 1`` means fedproto is better when
    ``higher_is_better``, which the text says)."""

    what: str
    value: float | None
    baseline: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
                break
    return info


def write_result(name: str, result: dict[str, Any], directory: Path | None = None) -> Path:
    """Store a workload's result as ``<directory>/<name>.json`` (``benchmarks/results`` by default)."""
    folder = directory or RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=False, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Stats):
        return value.to_dict()
    if isinstance(value, (Target, Ratio)):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def run_async(coro: Awaitable[Any]) -> Any:
    """Run a coroutine on a fresh event loop."""
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextlib.contextmanager
def timed(label: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Log how long a block took."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if log is not None:
            log(f"{label}: {time.perf_counter() - started:.1f} s")
