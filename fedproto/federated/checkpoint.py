"""A federated run's directory: checkpoints after every round, written so a crash never leaves half of one.

Layout of a run directory::

    run.json                     the run's settings (strategy, sampling, model signature, and any
                                 caller settings such as the command line), written once
    weights-000007.safetensors   the global weights after round 7
    strategy-000007.safetensors  the strategy's tensors (FedAdam's moments...; may hold none)
    state-000007.json            the sampler's state, the strategy's settings, every round record
    manifest.json                the last complete round: its number, its files and their SHA-256
    accuracy.png                 accuracy per round (written by FedAvg when it plots)

Every file is written to a temporary name in the directory, flushed and ``fsync``-ed, then renamed over
its final name (``os.replace``, atomic on POSIX), and the directory is ``fsync``-ed. A round's files
carry its number, and ``manifest.json`` is written last: until it names round 7, round 6's files are
the checkpoint, whatever else is on disk. Files of older rounds are removed after the manifest moves on.
Reading checks every file against the manifest's digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from fedproto.federated.errors import ResumeError
from fedproto.federated.records import RoundRecord

__all__ = ["Checkpoint", "RunDirectory", "model_signature"]

#: The layout version in ``manifest.json`` and ``run.json``.
FORMAT = 1
MANIFEST = "manifest.json"
RUN = "run.json"


def model_signature(weights: Mapping[str, Tensor]) -> list[list[Any]]:
    """``[[name, dtype, shape], ...]`` in state-dict order: what must match for a run to resume."""
    return [
        [name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]
        for name, tensor in weights.items()
    ]


def _fsync_directory(directory: Path) -> None:
    # On POSIX a rename is durable only once the directory is synced; some systems cannot open one.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


def _tensor_bytes(tensors: Mapping[str, Tensor]) -> bytes:
    from safetensors.torch import save

    # safetensors wants contiguous CPU tensors that share no memory with one another
    return save({name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()})


def _tensors_from(data: bytes, what: str) -> dict[str, Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ResumeError(f"cannot read {what}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """One complete round as read back from a run directory."""

    round: int
    weights: dict[str, Tensor]
    strategy_settings: dict[str, Any]
    strategy_state: dict[str, Tensor]
    sampler_state: dict[str, Any]
    history: list[RoundRecord]


class RunDirectory:
    """The run directory at ``path`` (created when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def has_checkpoint(self) -> bool:
        """Whether a complete round was checkpointed here."""
        return (self.path / MANIFEST).is_file()

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.path / name).read_text())
        except FileNotFoundError:
            raise ResumeError(
                f"{self.path} has no {name}: not a run directory with a complete round"
            ) from None
        except (OSError, ValueError) as exc:
            raise ResumeError(f"cannot read {self.path / name}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ResumeError(f"{self.path / name} is not a run file of format {FORMAT}")
        return data

    # -- writing --------------------------------------------------------------------------------------

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        """Write ``run.json`` (the run's settings, JSON values)."""
        self.path.mkdir(parents=True, exist_ok=True)
        body = {"format": FORMAT, **settings}
        write_atomically(self.path / RUN, json.dumps(body, indent=2, sort_keys=True).encode())

    def settings(self) -> dict[str, Any]:
        """``run.json``'s settings (ResumeError when there are none)."""
        data = self._json(RUN)
        data.pop("format")
        return data

    def save(
        self,
        *,
        round: int,
        weights: Mapping[str, Tensor],
        strategy_settings: Mapping[str, Any],
        strategy_state: Mapping[str, Tensor],
        sampler_state: Mapping[str, Any],
        history: list[RoundRecord],
    ) -> None:
        """Checkpoint round ``round``: its files first, then the manifest naming them, then clean up."""
        self.path.mkdir(parents=True, exist_ok=True)
        state = {
            "format": FORMAT,
            "round": round,
            "strategy": dict(strategy_settings),
            "sampler": dict(sampler_state),
            "history": [record.to_json() for record in history],
        }
        contents = {
            "weights": (f"weights-{round:06d}.safetensors", _tensor_bytes(weights)),
            "strategy": (f"strategy-{round:06d}.safetensors", _tensor_bytes(strategy_state)),
            "state": (f"state-{round:06d}.json", json.dumps(state, indent=1).encode()),
        }
        for name, data in contents.values():
            write_atomically(self.path / name, data)
        manifest = {
            "format": FORMAT,
            "round": round,
            "model": model_signature(weights),
            "files": {
                kind: {"name": name, "sha256": hashlib.sha256(data).hexdigest()}
                for kind, (name, data) in contents.items()
            },
        }
        write_atomically(self.path / MANIFEST, json.dumps(manifest, indent=2).encode())
        keep = {name for name, _ in contents.values()}
        for old in self.path.iterdir():
            if old.name not in keep and old.name.startswith(("weights-", "strategy-", "state-")):
                with contextlib.suppress(OSError):
                    old.unlink()

    # -- reading --------------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` (ResumeError when there is no complete round)."""
        return self._json(MANIFEST)

    def check_model(self, weights: Mapping[str, Tensor]) -> None:
        """ResumeError unless the checkpoint's model has the names, dtypes and shapes of ``weights``."""
        saved = self.manifest().get("model")
        expected = model_signature(weights)
        if saved != expected:
            saved_rows = {row[0]: row[1:] for row in saved or []}
            expected_rows = {row[0]: row[1:] for row in expected}
            missing = sorted(set(expected_rows) - set(saved_rows))
            extra = sorted(set(saved_rows) - set(expected_rows))
            differ = sorted(
                n for n in set(saved_rows) & set(expected_rows) if saved_rows[n] != expected_rows[n]
            )
            details = []
            if missing:
                details.append(f"the checkpoint lacks {missing[:5]}")
            if extra:
                details.append(f"the model lacks {extra[:5]}")
            for name in differ[:5]:
                details.append(f"{name!r} is {saved_rows[name]} there, {expected_rows[name]} here")
            if not details:
                details.append("the state-dict order differs")
            raise ResumeError(f"{self.path} holds a run of another model: {'; '.join(details)}")

    def load(self) -> Checkpoint:
        """The last complete round, every file checked against the manifest."""
        manifest = self.manifest()
        data: dict[str, bytes] = {}
        try:
            for kind in ("weights", "strategy", "state"):
                entry = manifest["files"][kind]
                blob = (self.path / entry["name"]).read_bytes()
                if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
                    raise ResumeError(f"{self.path / entry['name']} is damaged (its SHA-256 differs)")
                data[kind] = blob
        except (KeyError, TypeError, OSError) as exc:
            raise ResumeError(
                f"{self.path}: the checkpoint of round {manifest.get('round')} is incomplete ({exc})"
            ) from None
        weights = _tensors_from(data["weights"], "the global weights")
        names = [row[0] for row in manifest.get("model", [])]
        if sorted(names) != sorted(weights):
            raise ResumeError(f"{self.path}: the weights file does not hold the manifest's tensors")
        try:
            state = json.loads(data["state"])
            history = [RoundRecord.from_json(record) for record in state["history"]]
            return Checkpoint(
                round=int(manifest["round"]),
                weights={name: weights[name] for name in names},
                strategy_settings=dict(state["strategy"]),
                strategy_state=_tensors_from(data["strategy"], "the strategy's state"),
                sampler_state=dict(state["sampler"]),
                history=history,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ResumeError(f"{self.path}: cannot read the checkpoint's state ({exc})") from None
