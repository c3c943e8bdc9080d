"""Handlers of custom calls (docs/protocol.md section 11): listing the exposed methods and calling one."""

from __future__ import annotations

import asyncio

from fedproto import codec
from fedproto.errors import InternalError, InvalidArgumentError, ResourceExhaustedError
from fedproto.server.dispatch import Connection, Reply
from fedproto.server.methods import CallContext, ExposedMethod
from fedproto.server.services import WorkerServices
from fedproto.session import RequestReceived

__all__ = ["call", "list_methods"]


async def list_methods(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Describe every exposed method."""
    return {"list_methods_reply": codec.methods_reply_to_proto(services.methods.infos())}


async def call(services: WorkerServices, conn: Connection, ev: RequestReceived) -> Reply:
    """Run an exposed method: coroutines and inline methods on the event loop, others on a thread."""
    request = ev.message
    method: ExposedMethod = services.methods.get(request.method)  # an unknown name before any argument
    size = codec.call_args_size(request)
    limit = services.limits.max_call_args_bytes
    if limit and size > limit:
        raise ResourceExhaustedError(
            f"call arguments take {size} bytes, more than the limit of {limit} bytes (max_call_args_bytes)",
            details={"limit": str(limit), "requested": str(size)},
        )
    _, args, kwargs = codec.call_request_from_proto(request)
    context = None
    if method.wants_context:
        context = CallContext(
            identity=conn.identity, method=method.name, _notify=conn.notify, _loop=asyncio.get_running_loop()
        )
    call_args, call_kwargs = method.bind(args, kwargs, context)
    try:
        if method.is_async:
            result = await method.func(*call_args, **call_kwargs)
        elif method.inline:
            result = method.func(*call_args, **call_kwargs)
        else:
            result = await services.threads.run_sync(method.func, *call_args, **call_kwargs)
    except asyncio.CancelledError:
        if context is not None:
            context.cancelled.set()
        raise
    try:
        reply = codec.call_reply_to_proto(result)
    except codec.ValueTooDeepError as exc:
        # A Value, but deeper than any reply may carry (echo of a 31-level argument, say): the client
        # would not decode the reply, so it gets a typed error in its place (section 8.3.7).
        raise InvalidArgumentError(
            f"{method.name} returned a value nested deeper than {codec.MAX_SEND_DEPTH} levels, more than a "
            "reply may carry (docs/protocol.md section 8.3.7)",
            details=exc.details,
        ) from None
    except InvalidArgumentError as exc:
        raise InternalError(f"{method.name} returned a value the protocol cannot carry: {exc}") from None
    return {"call_reply": reply}
