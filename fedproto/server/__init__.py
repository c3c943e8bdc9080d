"""The reference server (worker): serving, object store, exposed methods, conformance profile."""

from fedproto.server.methods import CallContext, MethodRegistry, rpc
from fedproto.server.store import ObjectStore
from fedproto.server.worker import ANONYMOUS, Worker, load_token_file

__all__ = ["ANONYMOUS", "CallContext", "MethodRegistry", "ObjectStore", "Worker", "load_token_file", "rpc"]
