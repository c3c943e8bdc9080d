"""A tiny run of every benchmark: the harness, servers, clients, baselines and report work end to end.

Correctness only (bytes come back intact, losses agree, files are written); no timing is asserted. The
Flower side is skipped: it needs its own virtual environment, which only ``make bench`` creates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytest.importorskip("msgpack")
pytest.importorskip("grpc")

#: The quick run starts every server and client at once (the Node worker among them) on a shared 2-CPU
#: machine: minutes, not seconds, when the machine is busy.
QUICK_RUN_TIMEOUT = 300
pytestmark = pytest.mark.timeout(QUICK_RUN_TIMEOUT + 60)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-flower", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _result(out: Path, name: str) -> dict:
    return json.loads((out / "results" / f"{name}.json").read_text())


def test_bulk_moves_every_payload_intact(quick_run: Path) -> None:
    bulk = _result(quick_run, "bulk")
    transports = {row["transport"] for row in bulk["table"]}
    assert transports == {
        "fedproto",
        "fedproto_sha256",
        "fedproto_node",
        "ws_bare",
        "ws_one_message",
        "pysyft",
        "grpc",
    }
    # the default offer gets xxh3-128 from both workers; the other row offered sha256 alone (section 7.5)
    assert bulk["digests"] == {
        "fedproto": "xxh3-128",
        "fedproto_sha256": "sha256",
        "fedproto_node": "xxh3-128",
    }
    for row in bulk["table"]:
        assert row["correct"] is True, row
        assert row["mbps"] > 0 and row["peak_server_x"] >= 0
    assert {t["name"] for t in bulk["targets"]} and all("met" in t for t in bulk["targets"])
    assert any("Node worker" in r["what"] for r in bulk["ratios"]), "the Node worker is compared"


def test_small_requests_measure_every_client(quick_run: Path) -> None:
    small = _result(quick_run, "small")
    for name in ("fedproto_ping", "fedproto_echo", "node_ping", "node_echo", "ws_echo"):
        row = small["results"][name]
        assert row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"]
        assert set(row["rps"]) == {"1", "8", "64"}
    assert small["results"]["grpc_echo"]["p50_us"] > 0


def test_fit_is_the_same_training_locally_and_remotely(quick_run: Path) -> None:
    fit = _result(quick_run, "fit")
    for row in fit["results"].values():
        assert row["losses_agree"] is True, row["first_losses"]


def test_federated_fedproto_side_trains_and_flower_is_skipped(quick_run: Path) -> None:
    federated = _result(quick_run, "federated")
    rounds = federated["fedproto"]["rounds"]
    assert len(rounds) == federated["config"]["rounds"]
    assert all(r["seconds"] > 0 and 0 <= r["accuracy"] <= 1 for r in rounds)
    assert "flower" not in federated and federated["flower_error"]
    assert federated["targets"][0]["met"] is None


def test_simulation_fedproto_side_trains_its_sampled_clients(quick_run: Path) -> None:
    simulation = _result(quick_run, "simulation")
    config = simulation["config"]
    rounds = simulation["fedproto"]["rounds"]
    assert len(rounds) == config["rounds"]
    assert all(r["finished"] == r["sampled"] > 0 and 0 <= r["accuracy"] <= 1 for r in rounds)
    assert simulation["fedproto"]["final_accuracy"] == rounds[-1]["accuracy"]
    assert "flower" not in simulation and simulation["flower_error"]


def test_report_is_written_with_its_plots(quick_run: Path) -> None:
    text = (quick_run / "performance.md").read_text()
    for heading in ("## Targets", "## Bulk tensor transfer", "## Small requests", "## Remote fit overhead"):
        assert heading in text
    assert (quick_run / "results" / "performance-bulk.png").stat().st_size > 1000
    assert "performance-bulk.png" in text
