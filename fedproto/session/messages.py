"""The envelope's body kinds as the sessions sort them, and how one envelope becomes one frame.

Which request each reply answers (section 19), which bodies only a client or only a server sends
(section 3.7), and the two frame builders every session uses.
"""

from __future__ import annotations

from typing import Any

from fedproto import codec
from fedproto.errors import ProtocolError
from fedproto_pb.v1.envelope_pb2 import Envelope

__all__ = [
    "CLIENT_CONTROL_KINDS",
    "MIN_CLIENT_FRAME_BYTES",
    "PROGRESS_KINDS",
    "PROTOCOL_VERSIONS",
    "REPLY_KIND",
    "REQUEST_KINDS",
    "REQUIRED_ERROR_DETAILS",
    "SERVER_ONLY_KINDS",
    "error_frame",
    "frame",
]

#: Protocol versions this implementation speaks (section 4.2).
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)

#: Every request body kind and the body kind of its successful terminal reply (section 19).
REPLY_KIND: dict[str, str] = {
    "ping": "pong",
    "send_object": "send_object_reply",
    "get_object": "get_object_reply",
    "delete_object": "delete_object_reply",
    "list_objects": "list_objects_reply",
    "count_objects": "count_objects_reply",
    "clear_objects": "clear_objects_reply",
    "search_objects": "search_objects_reply",
    "list_datasets": "list_datasets_reply",
    "call": "call_reply",
    "list_methods": "list_methods_reply",
    "set_train_config": "set_train_config_reply",
    "fit": "fit_reply",
    "evaluate": "evaluate_reply",
    "get_weights": "get_weights_reply",
    "set_weights": "set_weights_reply",
    "list_models": "list_models_reply",
}
REQUEST_KINDS = frozenset(REPLY_KIND)
#: Bodies a client sends that are not requests: they get no reply of their own.
CLIENT_CONTROL_KINDS = frozenset({"hello", "cancel", "goodbye", "chunk"})
#: Bodies only a server sends (section 3.7).
SERVER_ONLY_KINDS = frozenset(
    {"welcome", "notification", "error", "fit_progress", "weights_manifest", *REPLY_KIND.values()}
)
#: Non-terminal bodies a server may send with a request's id before its terminal reply.
PROGRESS_KINDS = frozenset({"fit_progress", "weights_manifest", "chunk"})
#: The smallest non-zero ``Hello.max_frame_bytes`` in force; a smaller one counts as this (section 4.6.3).
MIN_CLIENT_FRAME_BYTES = 1024
#: Error details a receiver may depend on (section 13.1.3): kept, when they fit, as an Error is shortened.
REQUIRED_ERROR_DETAILS = frozenset({"supported", "request_id"})


def frame(request_id: int, **body: Any) -> bytes:
    """One envelope with ``request_id`` and one body, e.g. ``frame(0, goodbye=Goodbye())``, encoded."""
    return codec.encode_envelope(Envelope(request_id=request_id, **body))


def error_frame(request_id: int, error: ProtocolError, limit: int = 0) -> bytes:
    """The frame of an ``Error`` envelope carrying ``error``, within ``limit`` bytes when it is non-zero.

    An Error larger than the client's frame limit is shortened, never refused (section 13.1.6): the
    message is cut first (details such as a limit or an error id say more per byte than the end of a
    long message), then the details the protocol does not require are dropped and the message cut
    again, and last the required ones. The code and the request id always stay.
    """
    proto = codec.error_to_proto(error)
    data = frame(request_id, error=proto)
    if not limit or len(data) <= limit:
        return data
    text = proto.message.encode()
    for keep in (lambda key: True, REQUIRED_ERROR_DETAILS.__contains__, lambda key: False):
        for key in [k for k in proto.details if not keep(k)]:
            del proto.details[key]
        proto.message = ""
        room = limit - len(frame(request_id, error=proto)) - 4  # 4: the message's tag and length varint
        if room > 0:
            # cut at a character boundary: the bytes of a partial last character are dropped
            proto.message = text[:room].decode(errors="ignore")
            data = frame(request_id, error=proto)
            if len(data) <= limit:
                return data
    proto.message = ""
    return frame(request_id, error=proto)
