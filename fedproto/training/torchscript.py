"""TorchScript archives in and out: the one place that saves, loads and quiets ``torch.jit``.

TorchScript is how models and losses travel (protocol section 12.1): a client saves them with
:func:`save_torchscript`, a worker loads client bytes with :func:`load_torchscript` (only ever
``torch.jit.load``, never ``pickle`` or ``torch.load``), and FedAvg loads the archive it scripted once so
every worker receives the same bytes.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from collections.abc import Iterator

import torch

from fedproto.errors import InvalidArgumentError

__all__ = ["error_summary", "load_torchscript", "quiet_torchscript", "save_torchscript"]

_TORCHSCRIPT_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Run TorchScript work one thread at a time, without torch's deprecation warnings for ``torch.jit``.

    TorchScript is this protocol's format, so the warnings are noise. The lock is needed because the
    TorchScript compiler is not thread-safe (two threads scripting the same module class can fail with
    "Can't redefine method"), and ``warnings.catch_warnings`` changes process-wide state.
    """
    with _TORCHSCRIPT_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def error_summary(exc: BaseException) -> str:
    """One line about an exception: the TorchScript interpreter's last line, or the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    return line if line.startswith(type(exc).__name__) else f"{type(exc).__name__}: {line}"


def save_torchscript(module: torch.jit.ScriptModule, what: str) -> bytes:
    """The archive ``torch.jit.save`` writes for ``module``; TypeError naming ``what`` when it cannot."""
    buffer = io.BytesIO()
    try:
        with quiet_torchscript():
            torch.jit.save(module, buffer)
    except Exception as exc:
        raise TypeError(f"the {what} cannot be saved as TorchScript: {error_summary(exc)}") from exc
    return buffer.getvalue()


def load_torchscript(data: bytes | bytearray | memoryview, field: str) -> torch.jit.ScriptModule:
    """Load bytes as a TorchScript archive on the CPU (only ``torch.jit.load``).

    Raises InvalidArgumentError naming the train config's ``field`` when the bytes are no loadable
    archive: a worker loads what a client sent, so this is the client's error.
    """
    try:
        with quiet_torchscript():
            module: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:
        raise InvalidArgumentError(
            f"{field} is not a loadable TorchScript archive: {error_summary(exc)}", details={"field": field}
        ) from None
    return module
