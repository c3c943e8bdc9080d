"""The whole suite against the TypeScript worker of node/ (built by `make node-build`), run as a process.

The worker is written from docs/protocol.md and the .proto files alone; passing here is what makes the
protocol language-neutral in practice. Training is not implemented there, so its cases are skipped for
the capability `training`, and §3.6.3 is checked instead (training requests answer UNIMPLEMENTED).
"""

from __future__ import annotations

import contextlib
import queue
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conformance_servers import TOKENS, run_suite

from conformance import Verdict

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "node" / "dist" / "cli.js"
READY = re.compile(r"^listening on (ws://\S+)$")

#: Cases that cannot apply to the Node worker in the token run, and why.
NOT_APPLICABLE = {
    "calls/18.2.9/notify-needs-capability": "it advertises notifications (the run without them covers it)",
    "auth/18.5.3/anonymous-identity": "this run uses tokens (the anonymous run covers it)",
    "auth/15.2.2/tokens-ignored-without-tokens": "this run uses tokens (the anonymous run covers it)",
    "objects/7.5.8/digest-mismatch-blake3": "it computes sha256 and xxh3-128 (blake3 is optional, 7.5.2)",
}


@contextlib.contextmanager
def node_worker(*args: str, ready_timeout: float = 20.0) -> Iterator[str]:
    """`node node/dist/cli.js serve --conformance` on a free loopback port; yields the URL."""
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    assert CLI.exists(), f"{CLI.relative_to(ROOT)} is missing; run `make node-build`"
    proc = subprocess.Popen(
        [node, str(CLI), "serve", "--host", "127.0.0.1", "--port", "0", "--conformance", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
        reader.start()
        deadline = time.monotonic() + ready_timeout
        url = None
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            match = READY.match(line.strip())
            url = match.group(1) if match else None
        assert url is not None, f"the Node worker did not get ready: {proc.poll()=}"
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("node-worker") / "tokens.txt"
    path.write_text("".join(f"{identity} {token}\n" for identity, token in TOKENS.items()))
    return path


def test_node_worker_passes_every_case(token_file: Path) -> None:
    with node_worker("--token-file", str(token_file)) as url:
        run = run_suite(url, token=TOKENS["alice"], token2=TOKENS["bob"], max_examples=5, seed=11)
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.counts_as_failure]
    assert not failures, "\n".join(failures)
    assert run.count(Verdict.XFAIL) == 0
    skipped = {r.case.id: r.detail for r in run.results if r.verdict is Verdict.SKIPPED}
    # Every other skip is a training case, skipped for the capability it names.
    not_training = {case: detail for case, detail in skipped.items() if "'training'" not in detail}
    assert set(not_training) <= set(NOT_APPLICABLE), not_training
    passed = {r.case.id for r in run.results if r.verdict is Verdict.PASSED}
    assert "framing/3.6.3/capability-not-advertised" in passed
    assert run.passed >= 140


def test_node_worker_without_tokens() -> None:
    with node_worker() as url:
        run = run_suite(url, ["auth", "handshake", "objects/9.1"], max_examples=5, seed=12)
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.counts_as_failure]
    assert not failures, "\n".join(failures)
    passed = {r.case.id for r in run.results if r.verdict is Verdict.PASSED}
    assert {"auth/18.5.3/anonymous-identity", "auth/15.2.2/tokens-ignored-without-tokens"} <= passed


def test_node_worker_without_notifications() -> None:
    # The one case the token run cannot reach: notify on a server that does not advertise notifications.
    with node_worker("--no-notifications") as url:
        run = run_suite(url, ["calls/18.2", "framing/3.6"], max_examples=5, seed=13)
    failures = [f"{r.case.id}: {r.detail}" for r in run.results if r.counts_as_failure]
    assert not failures, "\n".join(failures)
    passed = {r.case.id for r in run.results if r.verdict is Verdict.PASSED}
    assert "calls/18.2.9/notify-needs-capability" in passed
