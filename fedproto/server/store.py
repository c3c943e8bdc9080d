"""The object store: tensors each client identity keeps on a worker (docs/protocol.md section 9).

Objects are scoped per identity: one identity's store is invisible to every other. Each object keeps its
payload as little-endian bytes plus metadata, so a ``get`` streams exactly the bytes that were sent. Its
digest (docs/protocol.md section 7.5) is the one verified on upload, under the algorithm of that
connection; a connection under another algorithm gets that one computed once and kept (section 7.5.11).
Quotas bound what one identity may keep: its tensor bytes (counting the uploads it has in progress,
whose buffers already take memory), its number of objects, and each object's metadata (docs/protocol.md
section 14.2.8 to 14.2.10). Every operation either completes or leaves the store as it was.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch

from fedproto import codec, hashing
from fedproto.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from fedproto.types import ObjectInfo, TensorInfo

__all__ = ["MAX_ID_BYTES", "ObjectStore", "StoredObject"]

#: Longest object id accepted, in UTF-8 bytes (section 9.9).
MAX_ID_BYTES = 256


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored tensor: metadata, its payload bytes, and its digests by algorithm (section 7.5.11)."""

    info: ObjectInfo
    payload: bytearray | bytes | memoryview
    digests: dict[str, bytes] = field(default_factory=dict)

    def digest(self, algorithm: str) -> bytes:
        """The payload's digest under ``algorithm``, computed at most once per algorithm."""
        value = self.digests.get(algorithm)
        if value is None:
            value = self.digests[algorithm] = hashing.digest(algorithm, self.payload)
        return value

    def described(self, algorithm: str = hashing.SHA256, *, compute: bool = True) -> ObjectInfo:
        """The metadata with the digest of ``algorithm`` in its field (section 7.5.8), the other one empty.

        Without ``compute`` a digest not known yet is left empty, as listings may (section 9.5.3): a
        listing never hashes the whole store.
        """
        value = self.digest(algorithm) if compute else self.digests.get(algorithm, b"")
        sha, other = (value, b"") if algorithm == hashing.SHA256 else (b"", value)
        tensor = self.info.tensor
        if tensor.sha256 == sha and tensor.digest == other:
            return self.info
        return replace(self.info, tensor=replace(tensor, sha256=sha, digest=other))

    def tensor(self) -> torch.Tensor:
        """Decode the payload (a copy, so the stored bytes can never be changed through it)."""
        return codec.tensor_from_bytes(
            codec.dtype_to_proto(self.info.tensor.dtype), self.info.tensor.shape, bytes(self.payload)
        )


class _IdentityStore:
    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.bytes_used = 0


class ObjectStore:
    """Every identity's objects, with per-identity quotas of bytes and of objects (0: unlimited).

    ``max_metadata_bytes`` bounds one object's id, tags and description together (UTF-8 bytes), so that
    the object count quota also bounds the memory metadata takes.
    """

    def __init__(
        self,
        *,
        max_bytes_per_identity: int = 0,
        max_objects_per_identity: int = 0,
        max_metadata_bytes: int = 0,
    ) -> None:
        self.max_bytes = max_bytes_per_identity
        self.max_objects = max_objects_per_identity
        self.max_metadata_bytes = max_metadata_bytes
        self._stores: dict[str, _IdentityStore] = {}
        self._ids = itertools.count(1)

    def _store(self, identity: str) -> _IdentityStore:
        store = self._stores.get(identity)
        if store is None:
            store = self._stores[identity] = _IdentityStore()
        return store

    @staticmethod
    def check_id(object_id: str) -> None:
        """Reject ids the protocol does not allow (INVALID_ARGUMENT)."""
        if not object_id or len(object_id.encode()) > MAX_ID_BYTES:
            raise InvalidArgumentError(f"object ids are 1 to {MAX_ID_BYTES} bytes of UTF-8")

    def bytes_used(self, identity: str) -> int:
        """Payload bytes the identity keeps stored."""
        return self._store(identity).bytes_used

    def check_metadata(self, object_id: str, tags: Iterable[str], description: str) -> None:
        """Raise RESOURCE_EXHAUSTED when an object's id, tags and description exceed the metadata limit."""
        if not self.max_metadata_bytes:
            return
        size = len(object_id.encode()) + len(description.encode()) + sum(len(t.encode()) for t in tags)
        if size > self.max_metadata_bytes:
            raise ResourceExhaustedError(
                f"the object's id, tags and description take {size} bytes, more than the limit of "
                f"{self.max_metadata_bytes}",
                details={"limit": str(self.max_metadata_bytes), "requested": str(size)},
            )

    def check_room(
        self, identity: str, object_id: str, nbytes: int, *, overwrite: bool, pending: int = 0
    ) -> None:
        """Raise unless ``nbytes`` more (replacing ``object_id`` when overwriting) fit the quotas.

        ``pending`` is the bytes of the identity's other uploads in progress: their buffers already
        take memory, so they count as used (section 14.2.9).
        """
        store = self._store(identity)
        if object_id:
            self.check_id(object_id)
            if object_id in store.objects and not overwrite:
                raise AlreadyExistsError(f"object {object_id!r} already exists", details={"id": object_id})
        replacing = bool(object_id) and overwrite and object_id in store.objects
        count = len(store.objects)
        if self.max_objects and not replacing and count + 1 > self.max_objects:
            raise ResourceExhaustedError(
                f"this identity keeps {count} objects, the most it may; delete some first",
                details={"limit": str(self.max_objects), "used": str(count), "requested": "1"},
            )
        freed = store.objects[object_id].info.nbytes if replacing else 0
        used = store.bytes_used + pending
        if self.max_bytes and used - freed + nbytes > self.max_bytes:
            # what is used now, what is asked and what the limit is: enough to decide what to delete
            raise ResourceExhaustedError(
                f"storing {nbytes} bytes would exceed this identity's quota: {store.bytes_used} of "
                f"{self.max_bytes} bytes are used by {count} object{'' if count == 1 else 's'}"
                + (f" and {pending} by uploads in progress" if pending else "")
                + (f" ({freed} of them freed by the overwrite)" if freed else "")
                + "; delete some or store less",
                details={
                    "limit": str(self.max_bytes),
                    "used": str(used),
                    "requested": str(nbytes),
                    "objects": str(count),
                },
            )

    def put(
        self,
        identity: str,
        *,
        object_id: str,
        tags: Iterable[str],
        description: str,
        tensor: TensorInfo,
        payload: bytearray | bytes | memoryview,
        overwrite: bool = False,
        algorithm: str = hashing.SHA256,
    ) -> ObjectInfo:
        """Store a payload; an empty id gets a fresh one. Returns the stored object's metadata.

        ``tensor`` carries the digest under ``algorithm`` when the upload's was verified (chunked); an
        inline payload is hashed here, once (the reply must carry it, section 9.2.10).
        """
        store = self._store(identity)
        tags = tuple(tags)
        if not object_id:
            object_id = self._fresh_id(store)
        self.check_metadata(object_id, tags, description)
        self.check_room(identity, object_id, tensor.nbytes, overwrite=overwrite)
        given = tensor.sha256 if algorithm == hashing.SHA256 else tensor.digest
        value = given or hashing.digest(algorithm, payload)
        sha, other = (value, b"") if algorithm == hashing.SHA256 else (b"", value)
        info = ObjectInfo(
            id=object_id,
            tags=tags,
            description=description,
            tensor=replace(tensor, sha256=sha, digest=other),
        )
        old = store.objects.get(object_id)  # replacing keeps the object's place in the order
        if old is not None:
            store.bytes_used -= old.info.nbytes
        store.objects[object_id] = StoredObject(info, payload, {algorithm: value})
        store.bytes_used += tensor.nbytes
        return info

    def _fresh_id(self, store: _IdentityStore) -> str:
        while True:
            candidate = f"obj-{next(self._ids)}"
            if candidate not in store.objects:
                return candidate

    def get(self, identity: str, object_id: str) -> StoredObject:
        """Return a stored object (NOT_FOUND otherwise)."""
        try:
            return self._store(identity).objects[object_id]
        except KeyError:
            raise NotFoundError(f"no object {object_id!r}", details={"id": object_id}) from None

    def delete(self, identity: str, object_id: str) -> int:
        """Delete an object; returns the bytes freed (NOT_FOUND otherwise)."""
        store = self._store(identity)
        obj = store.objects.pop(object_id, None)
        if obj is None:
            raise NotFoundError(f"no object {object_id!r}", details={"id": object_id})
        store.bytes_used -= obj.info.nbytes
        return obj.info.nbytes

    def list(self, identity: str, algorithm: str = hashing.SHA256) -> builtins.list[ObjectInfo]:
        """Every object's metadata (digests under ``algorithm``), in the order first stored."""
        return [o.described(algorithm, compute=False) for o in self._store(identity).objects.values()]

    def count(self, identity: str) -> int:
        """How many objects the identity keeps."""
        return len(self._store(identity).objects)

    def clear(self, identity: str) -> int:
        """Delete every object of the identity; returns how many were deleted."""
        store = self._store(identity)
        removed = len(store.objects)
        store.objects.clear()
        store.bytes_used = 0
        return removed

    def search(
        self, identity: str, tags: Iterable[str], algorithm: str = hashing.SHA256
    ) -> builtins.list[ObjectInfo]:
        """Objects that carry every one of ``tags`` (all objects for no tags), in stored order."""
        wanted = set(tags)
        objects = self._store(identity).objects.values()
        return [o.described(algorithm, compute=False) for o in objects if wanted <= set(o.info.tags)]
