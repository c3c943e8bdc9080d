"""The conformance profile (docs/protocol.md section 18): the fixture dataset, the test hooks and the
registered model that a server exposes when run with ``fedproto serve --conformance``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from fedproto.errors import ErrorCode, InvalidArgumentError, error_class_for
from fedproto.server.methods import CallContext
from fedproto.server.worker import Worker
from fedproto.types import Limits

__all__ = [
    "CONFORMANCE_LIMITS",
    "FIXTURE_KEY",
    "MAX_SLEEP_SECONDS",
    "REGISTERED_MODEL",
    "conformance_worker",
    "fixture_dataset",
]

#: The fixture dataset's key (section 18.1).
FIXTURE_KEY = "conformance"
#: The registered architecture's name (section 18.3).
REGISTERED_MODEL = "conformance-linear"
#: The longest ``sleep`` the hook accepts (section 18.2).
MAX_SLEEP_SECONDS = 60.0
#: Limits advertised in the conformance profile (section 18.4): small, so limit cases run fast.
CONFORMANCE_LIMITS = Limits(
    max_frame_bytes=4 * 1024 * 1024,
    max_in_flight=32,
    chunk_bytes=256 * 1024,
    max_object_bytes=64 * 1024 * 1024,
    max_call_args_bytes=1024 * 1024,
    idle_timeout_seconds=300.0,
    handshake_timeout_seconds=10.0,
    max_model_bytes=4 * 1024 * 1024,
)


def fixture_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """The 64-sample fixture: x[i][j] = ((4i + j) mod 11) / 10 - 0.5 and y[i] = 7i mod 3."""
    i = torch.arange(64).unsqueeze(1)
    j = torch.arange(4).unsqueeze(0)
    features = (((i * 4 + j) % 11).to(torch.float32) / 10.0 - 0.5).to(torch.float32)
    targets = (torch.arange(64) * 7 % 3).to(torch.int64)
    return features, targets


def _linear_model() -> nn.Module:
    return nn.Linear(4, 3)


def conformance_worker(
    id: str = "conformance",
    *,
    tokens: Mapping[str, str] | Iterable[str] | None = None,
    limits: Limits | None = None,
) -> Worker:
    """A worker that exposes exactly what section 18 requires, ready to ``serve``."""
    worker = Worker(id, tokens=tokens, limits=limits or CONFORMANCE_LIMITS, shutdown_grace=2.0)
    worker.add_capability("conformance")
    worker.add_dataset(fixture_dataset(), key=FIXTURE_KEY, description="conformance fixture")
    worker.register_model(REGISTERED_MODEL, _linear_model)

    @worker.method(description="Return the arguments as {'args': [...], 'kwargs': {...}}.")
    async def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @worker.method(description="Fail with the given protocol error code and message.")
    async def fail(code: int, message: str = "") -> None:
        if not 1 <= code <= max(ErrorCode):
            raise InvalidArgumentError(f"error code {code} is not between 1 and {int(max(ErrorCode))}")
        raise error_class_for(code)(message)

    @worker.method(description="Wait the given seconds (at most 60), then return them; cancellable.")
    async def sleep(seconds: float) -> float:
        if not 0 <= seconds <= MAX_SLEEP_SECONDS:
            raise InvalidArgumentError(f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}")
        await asyncio.sleep(seconds)
        return float(seconds)

    @worker.method(description="Push Notification{topic, payload} to the caller, then return null.")
    async def notify(ctx: CallContext, topic: str, payload: Any) -> None:
        await ctx.notify(topic, payload)

    @worker.method(description="Return the caller's identity.")
    async def whoami(ctx: CallContext) -> str:
        return ctx.identity

    return worker
