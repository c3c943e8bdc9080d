"""grpcio unary calls carrying raw bytes: the transport Flower is built on, with nothing on top.

A generic handler with no (de)serializers (the handlers see ``bytes``), message size limits lifted:
``/bench.Store/Put`` stores the request's bytes, ``Get`` returns them, ``Drop`` frees them and ``Echo``
returns its request (for small-request latency). Run the server with
``python -m benchmarks.baselines.grpc_raw``; it uses grpcio's synchronous server, as Flower does.
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

#: No message size limit on either side (-1), as a user moving big tensors over gRPC must set.
OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
SERVICE = "bench.Store"


class _Store:
    def __init__(self) -> None:
        self.data = b""

    def put(self, request: bytes, context: Any) -> bytes:
        self.data = request
        return b"K"

    def get(self, request: bytes, context: Any) -> bytes:
        return self.data

    def drop(self, request: bytes, context: Any) -> bytes:
        self.data = b""
        return b"K"

    @staticmethod
    def echo(request: bytes, context: Any) -> bytes:
        return request


def serve(host: str, port: int) -> None:
    store = _Store()
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(func)
        for name, func in (("Put", store.put), ("Get", store.get), ("Drop", store.drop), ("Echo", store.echo))
    }
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"READY {bound}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop(grace=1).wait(5)


class Client:
    """A channel and the four raw-bytes methods."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.put = self.channel.unary_unary(f"/{SERVICE}/Put")
        self.get = self.channel.unary_unary(f"/{SERVICE}/Get")
        self.drop = self.channel.unary_unary(f"/{SERVICE}/Drop")
        self.echo = self.channel.unary_unary(f"/{SERVICE}/Echo")

    def close(self) -> None:
        self.channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
