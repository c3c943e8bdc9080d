"""The client library: :class:`AsyncClient` (the core) and :class:`Client` (its synchronous facade)."""

from fedproto.client.async_client import AsyncClient, ObjectRef, RemoteMethods

__all__ = ["AsyncClient", "ObjectRef", "RemoteMethods"]
