"""The interop matrix: the Python and the Node client, each against the Python and the Node worker.

Every cell runs the same interop script (``tests/interop/script.py`` or ``node/dist/interop.js``, built
by ``make node-build``) against a worker in the conformance profile started in its own process, and
asserts every step and check that docs/interop.md lists.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from interop.matrix import KINDS, NODE_DIST, STEPS, WorkerProcess, failures, run_cell

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


@pytest.fixture(scope="module", params=KINDS, ids=lambda kind: f"{kind}-worker")
def worker(request: pytest.FixtureRequest) -> Iterator[WorkerProcess]:
    """A worker of each kind, shared by the two clients (each script starts by clearing the store)."""
    for built in ("cli.js", "interop.js"):
        assert (NODE_DIST / built).exists(), f"node/dist/{built} is missing: run `make node-build`"
    with WorkerProcess(request.param) as running:
        yield running


@pytest.mark.parametrize("client", KINDS, ids=lambda kind: f"{kind}-client")
def test_cell(worker: WorkerProcess, client: str) -> None:
    result, seconds = run_cell(client, worker.url)
    problems = failures(result)
    assert not problems, f"{client} client x {worker.kind} worker:\n" + "\n".join(problems)
    assert result["ok"] is True
    assert list(result["steps"]) == list(STEPS), "both scripts run the same steps in the same order"
    assert worker.alive(), f"the {worker.kind} worker died during the cell"
    print(f"{client} client x {worker.kind} worker: {seconds:.1f} s")
