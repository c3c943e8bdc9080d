"""Handlers of the training requests (docs/protocol.md section 12).

Training runs on the worker's training thread, never on the event loop, so the worker keeps answering
pings and other clients during a long fit. Progress events travel through a queue to a pump task that
sends them in order, all before the fit's terminal reply. Cancel and deadlines stop a fit between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time

import torch

from fedproto import codec
from fedproto.errors import InvalidArgumentError, UnimplementedError
from fedproto.server.dispatch import Connection, Reply
from fedproto.server.services import WorkerServices
from fedproto.server.store import ObjectStore
from fedproto.session import CHUNKED_WEIGHTS, MODEL_OBJECT, RequestReceived
from fedproto.training import FitProgressEvent, TrainingState
from fedproto.types import ModelCatalog

__all__ = ["evaluate", "fit", "get_weights", "list_models", "set_train_config", "set_weights"]

#: Without an interval asked for, the shortest time between two progress events inside an epoch.
_PROGRESS_SECONDS = 0.25


async def set_train_config(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Build the identity's model, optimizer and loss from a train config, replacing any earlier one.

    A config whose model is a stored object (``model_object``, section 12.9) has its archive read from
    the identity's store here, on the serving thread that owns the store, after the checks that come
    first (a weights-only worker refuses it before looking); the object stays where it is.
    """
    spec = codec.set_train_config_request_from_proto(ev.message)
    archive = None
    if spec.model_object is not None:
        if MODEL_OBJECT not in conn.session.capabilities:  # section 12.9.9
            raise UnimplementedError("this server reads no model from the object store (no 'model-object')")
        TrainingState.check_sources(spec, weights_only=services.weights_only)
        archive = _stored_archive(services.objects, conn.identity, spec.model_object)
    configure = functools.partial(
        TrainingState.configure,
        spec,
        registry=services.models,
        weights_only=services.weights_only,
        max_model_bytes=services.limits.max_model_bytes,
        model_archive=archive,
    )
    if services.threads.training_busy:
        # A fit holds the training thread: load the model on the serving thread instead (it keeps one
        # intra-op thread, so no second OpenMP team appears) rather than wait for the fit to end.
        state = configure()
    else:
        state = await services.threads.run_training(configure)
    services.training[conn.identity] = state
    return {"set_train_config_reply": codec.model_summary_to_proto(state.summary)}


def _stored_archive(objects: ObjectStore, identity: str, object_id: str) -> memoryview:
    """The bytes of the object a ``model_object`` names (section 12.9.4), without a copy.

    An id that breaks section 9.9 and an object that is not a 1-D uint8 tensor are INVALID_ARGUMENT; an id
    that names no object of the identity is NOT_FOUND.
    """
    try:
        objects.check_id(object_id)
    except InvalidArgumentError as exc:
        detail = {"field": "model_object"}
        raise InvalidArgumentError(f"model_object: {exc.message}", details=detail) from None
    stored = objects.get(identity, object_id)
    tensor = stored.info.tensor
    if tensor.dtype is not torch.uint8 or len(tensor.shape) != 1:
        raise InvalidArgumentError(
            f"model_object {object_id!r} holds a tensor of dtype {str(tensor.dtype).removeprefix('torch.')} "
            f"and shape {list(tensor.shape)}, not the 1-D uint8 tensor of an archive's bytes",
            details={"field": "model_object", "id": object_id},
        )
    return memoryview(stored.payload)


async def fit(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Train on a dataset, sending progress events; a cancel stops the fit between two batches."""
    request = codec.fit_request_from_proto(ev.message)
    dataset = services.dataset(request.dataset_key)
    state = services.training_state(conn.identity)
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
        if (
            request.progress_every
            or event.batch == event.batches_per_epoch
            or now - last_sent[0] >= _PROGRESS_SECONDS
        ):
            last_sent[0] = now
            loop.call_soon_threadsafe(queue.put_nowait, event)

    async def pump() -> None:
        while (event := await queue.get()) is not None:
            if conn.session.is_in_flight(ev.request_id):
                frame = conn.session.progress(ev.request_id, fit_progress=codec.fit_progress_to_proto(event))
                await conn.send(frame)

    pump_task = asyncio.create_task(pump())
    future = services.threads.submit_training(
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


async def evaluate(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Evaluate on a dataset; refused at once while the identity's fit runs (section 12.3.13)."""
    request = codec.evaluate_request_from_proto(ev.message)
    dataset = services.dataset(request.dataset_key)
    state = services.training_state(conn.identity)
    state.check_idle("evaluate")  # answered now, not after the running fit (section 12.3.13)
    result = await services.threads.run_training(
        state.evaluate,
        dataset,
        return_loss=request.return_loss,
        return_raw_accuracy=request.return_raw_accuracy,
        return_histograms=request.return_histograms,
        nr_bins=request.nr_bins,
        batch_size=request.batch_size,
        kind=request.kind,
    )
    return {"evaluate_reply": codec.evaluate_result_to_proto(result)}


async def get_weights(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply | None:
    """The identity's model weights by name: inline, or chunked when asked for (section 12.8).

    The chunked form is cut from a snapshot of the state dict (the weights of one moment, not torn by a
    fit that starts while they travel), chunk by chunk: no encoding of the whole model is built.
    """
    weights = services.training_state(conn.identity).state_dict()
    chunked = codec.get_weights_request_from_proto(ev.message)
    if not chunked or CHUNKED_WEIGHTS not in conn.session.capabilities:  # section 12.8.10
        return {"get_weights_reply": codec.weights_reply_to_proto(weights)}
    manifest, parts = codec.weights_manifest_of(weights)
    # in batches, each chunk framed straight from the snapshot's memory (as object downloads are)
    await conn.send_all(conn.session.download_weights(ev.request_id, manifest, parts, pieces=True))
    return None


async def set_weights(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Load weights into the identity's model (all of them when ``strict``), inline or chunked (12.8)."""
    state = services.training_state(conn.identity)
    state.check_idle("set weights")
    if ev.payload is not None:  # a completed chunked upload: the tensors are views of its buffer
        manifest = codec.weights_manifest_from_proto(ev.message.chunked)
        weights, strict = codec.weights_from_payload(manifest, ev.payload), ev.message.strict
    else:
        weights, strict = codec.set_weights_request_from_proto(ev.message)
    updated = await services.threads.run_training(state.load_weights, weights, strict=strict)
    return {"set_weights_reply": codec.count_reply_to_proto("set_weights", updated)}


async def list_models(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """The registered architectures, and whether the worker accepts nothing else (weights-only mode)."""
    catalog = ModelCatalog(names=tuple(sorted(services.models.names())), weights_only=services.weights_only)
    return {"list_models_reply": codec.model_catalog_to_proto(catalog)}
