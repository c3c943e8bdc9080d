"""The reference server (worker): serving, object store, exposed methods, conformance profile."""

from fedproto.server.methods import CallContext, MethodRegistry, rpc
from fedproto.server.store import ObjectStore
from fedproto.server.tokens import ANONYMOUS, load_token_file
from fedproto.server.worker import Worker

__all__ = ["ANONYMOUS", "CallContext", "MethodRegistry", "ObjectStore", "Worker", "load_token_file", "rpc"]
