from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedproto.federated.checkpoint import RunDirectory, model_signature, write_atomically
from fedproto.federated.errors import ResumeError
from fedproto.federated.records import ClientRound, RoundRecord


def _weights(scale: float = 1.0) -> dict[str, torch.Tensor]:
    return {
        "layer.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) * scale,
        "layer.bias": torch.ones(2, dtype=torch.float64) * scale,
        "norm.num_batches_tracked": torch.tensor(4),
    }


def _record(number: int) -> RoundRecord:
    return RoundRecord(
        round=number,
        clients=(
            ClientRound(worker="w1", client="w1/a", dataset_key="a", loss=0.5, samples=10, dataset_size=10),
            ClientRound(worker="w1", client="w1/b", dataset_key="b", status="late", error="deadline"),
            ClientRound(worker="w2", client="w2", dataset_key="a", status="unavailable", error="down"),
        ),
        loss=0.25,
        accuracy=0.75,
        seconds=1.5,
        available=2,
        sampled=2,
    )


def _save(run: RunDirectory, number: int, scale: float = 1.0) -> None:
    run.save(
        round=number,
        weights=_weights(scale),
        strategy_settings={"name": "fedadam", "eta": 0.1},
        strategy_state={"m.layer.weight": torch.full((2, 3), 0.5, dtype=torch.float64)},
        sampler_state={"kind": "seeded", "seed": 3},
        history=[_record(r) for r in range(1, number + 1)],
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    assert not run.has_checkpoint
    run.write_settings({"extra": {"rounds": 5}})
    _save(run, 1)
    _save(run, 2, scale=2.0)
    assert run.has_checkpoint and run.settings() == {"extra": {"rounds": 5}}
    checkpoint = run.load()
    assert checkpoint.round == 2
    assert list(checkpoint.weights) == list(_weights())  # state-dict order kept
    for name, tensor in _weights(2.0).items():
        assert (
            torch.equal(checkpoint.weights[name], tensor) and checkpoint.weights[name].dtype == tensor.dtype
        )
    assert checkpoint.strategy_settings == {"name": "fedadam", "eta": 0.1}
    assert torch.equal(
        checkpoint.strategy_state["m.layer.weight"], torch.full((2, 3), 0.5, dtype=torch.float64)
    )
    assert checkpoint.sampler_state == {"kind": "seeded", "seed": 3}
    assert checkpoint.history == [_record(1), _record(2)]
    assert checkpoint.history[0].late == 1 and checkpoint.history[0].failed[1].status == "unavailable"
    # Only the last round's files are kept.
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [
        "manifest.json",
        "run.json",
        "state-000002.json",
        "strategy-000002.safetensors",
        "weights-000002.safetensors",
    ]


def test_the_manifest_is_the_commit_point(tmp_path: Path) -> None:
    # A crash while round 2 is written leaves its files (whole or not) beside round 1's manifest:
    # the checkpoint is still round 1, and saving round 2 again replaces the leftovers.
    run = RunDirectory(tmp_path)
    _save(run, 1)
    (tmp_path / "weights-000002.safetensors").write_bytes(b"half a file")
    (tmp_path / ".state-000002.json.tmp-123").write_bytes(b"{")
    checkpoint = run.load()
    assert checkpoint.round == 1 and torch.equal(
        checkpoint.weights["layer.weight"], _weights()["layer.weight"]
    )
    _save(run, 2, scale=3.0)
    assert run.load().round == 2
    assert torch.equal(run.load().weights["layer.weight"], _weights(3.0)["layer.weight"])


def test_damaged_and_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    with pytest.raises(ResumeError, match=r"no manifest\.json"):
        run.load()
    _save(run, 1)
    weights = tmp_path / "weights-000001.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ResumeError, match="damaged"):
        run.load()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ResumeError, match="cannot read"):
        run.load()
    (tmp_path / "manifest.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ResumeError, match="format 1"):
        run.load()


def test_another_model_is_refused(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    _save(run, 1)
    run.check_model(_weights())
    other = dict(_weights())
    other["layer.weight"] = torch.zeros(3, 3)
    with pytest.raises(ResumeError, match=r"another model: 'layer.weight' is \['float32', \[2, 3\]\] there"):
        run.check_model(other)
    renamed = {("fc." + k.split(".", 1)[1] if k.startswith("layer") else k): v for k, v in _weights().items()}
    with pytest.raises(ResumeError, match="the checkpoint lacks"):
        run.check_model(renamed)
    reordered = dict(reversed(list(_weights().items())))
    with pytest.raises(ResumeError, match="order differs"):
        run.check_model(reordered)
    assert model_signature(_weights())[0] == ["layer.weight", "float32", [2, 3]]


def test_write_atomically_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    write_atomically(target, b"first")
    write_atomically(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temporary file left behind
