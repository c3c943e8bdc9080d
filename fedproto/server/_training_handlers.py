"""Request handlers for training (docs/protocol.md section 12), registered into the worker's table.

Training runs on the worker's threads, never on the event loop, so the worker keeps answering pings and
other clients during a long fit. Progress events travel through a queue to a pump task that sends them
in order, all before the fit's terminal reply. Cancel and deadlines stop a fit between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from typing import TYPE_CHECKING, Any

from fedproto import codec
from fedproto.errors import FailedPreconditionError
from fedproto.server.worker import _handles
from fedproto.session import RequestReceived
from fedproto.training import FitProgressEvent, TrainingState
from fedproto_pb.v1 import training_pb2

if TYPE_CHECKING:
    from fedproto.server._connection import ServerConnectionHandler
    from fedproto.server.worker import Worker

__all__: list[str] = []


def _state(worker: Worker, identity: str) -> TrainingState:
    state = worker._training.get(identity)
    if state is None:
        raise FailedPreconditionError("no train config: send one first (set_train_config)")
    return state


@_handles("set_train_config")
async def _set_train_config(
    worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived
) -> dict[str, Any]:
    spec = codec.train_spec_from_proto(ev.message.config)
    configure = functools.partial(
        TrainingState.configure,
        spec,
        registry=worker._model_registry(),
        weights_only=worker.weights_only,
        max_model_bytes=worker.limits.max_model_bytes,
    )
    if worker.training_busy:
        # A fit holds the training thread: load the model on the serving thread instead (it keeps one
        # intra-op thread, so no second OpenMP team appears) rather than wait for the fit to end.
        state = configure()
    else:
        state = await worker.run_training(configure)
    worker._training[conn.identity] = state
    reply = training_pb2.SetTrainConfigReply(
        parameter_count=state.parameter_count, state_names=state.state_names
    )
    return {"set_train_config_reply": reply}


@_handles("fit")
async def _fit(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    request: training_pb2.FitRequest = ev.message
    dataset = worker.dataset(request.dataset_key)
    state = _state(worker, conn.identity)
    state.check_idle("fit")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[FitProgressEvent | None] = asyncio.Queue()
    stop = threading.Event()

    last_sent = [0.0]

    def on_progress(event: FitProgressEvent) -> None:  # runs on the training thread
        # With no interval asked for, the worker sends the end of every epoch (section 12.4.4) and at
        # most a few events a second between them: each event wakes the serving thread, which costs
        # the training thread the GIL, so a short fit would otherwise spend a fifth of its time on them.
        now = time.monotonic()
        if request.progress_every or event.batch == event.batches_per_epoch or now - last_sent[0] >= 0.25:
            last_sent[0] = now
            loop.call_soon_threadsafe(queue.put_nowait, event)

    async def pump() -> None:
        while (event := await queue.get()) is not None:
            if conn.session.is_in_flight(ev.request_id):
                frame = conn.session.progress(ev.request_id, fit_progress=codec.fit_progress_to_proto(event))
                await conn.send(frame)

    pump_task = asyncio.create_task(pump())
    future = worker.submit_training(
        state.fit,
        dataset,
        progress=on_progress,
        progress_every=request.progress_every,
        should_stop=stop.is_set,
        return_weights=request.return_weights,
    )
    try:
        result = await asyncio.shield(future)
    except asyncio.CancelledError:
        # Stop between batches and wait for the thread, so the model is never trained twice at once.
        stop.set()
        with contextlib.suppress(Exception):
            await future
        raise
    finally:
        queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.shield(pump_task)
    return {"fit_reply": codec.fit_result_to_proto(result)}


@_handles("evaluate")
async def _evaluate(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    request: training_pb2.EvaluateRequest = ev.message
    dataset = worker.dataset(request.dataset_key)
    state = _state(worker, conn.identity)
    state.check_idle("evaluate")  # answered now, not after the running fit (section 12.3.13)
    result = await worker.run_training(
        state.evaluate,
        dataset,
        return_loss=request.return_loss,
        return_raw_accuracy=request.return_raw_accuracy,
        return_histograms=request.return_histograms,
        nr_bins=request.nr_bins,
        batch_size=request.batch_size,
    )
    return {"evaluate_reply": codec.evaluate_result_to_proto(result)}


@_handles("get_weights")
async def _get_weights(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    weights = _state(worker, conn.identity).state_dict()
    return {"get_weights_reply": training_pb2.GetWeightsReply(weights=codec.named_tensors_to_proto(weights))}


@_handles("set_weights")
async def _set_weights(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    state = _state(worker, conn.identity)
    state.check_idle("set weights")
    weights = codec.named_tensors_from_proto(ev.message.weights)
    updated = await worker.run_training(state.load_weights, weights, strict=ev.message.strict)
    return {"set_weights_reply": training_pb2.SetWeightsReply(updated=updated)}


@_handles("list_models")
async def _list_models(worker: Worker, conn: ServerConnectionHandler, ev: RequestReceived) -> dict[str, Any]:
    names = worker._model_registry().names()
    reply = training_pb2.ListModelsReply(names=sorted(names), weights_only=worker.weights_only)
    return {"list_models_reply": reply}
