"""Chunked model weights (section 12.8), with no I/O: cutting a state dict into chunks, streaming them back.

A chunked weights payload is the tensors of a manifest laid end to end (no padding), moved with the
chunk rules of section 7.3. The sender cuts chunks straight from the tensors' own memory
(:func:`parts_chunk_frames`): no whole-payload buffer exists on its side. The receiver either assembles
the payload into one buffer (the worker, for ``set_weights``, with :class:`~fedproto.session.transfers.
Assembly`) or streams it (:class:`WeightsStream`, the client's ``get_weights``): each chunk is checked
and hashed, then handed on as whole elements of named tensors, without the model ever being in memory
at once on the receiving side.

Since entries are not aligned to chunks, an element may straddle two chunks: the few bytes of its first
part wait in a small carry buffer until the rest arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from fedproto import codec, hashing
from fedproto.errors import DataLossError, ProtocolError
from fedproto.hashing import Hasher
from fedproto.session.transfers import ChunkPieces
from fedproto.types import WeightsEntry, WeightsManifest

__all__ = ["RawSlice", "WeightsStream", "parts_chunk_frames", "payload_parts"]


def payload_parts(parts: Sequence[memoryview], chunk_bytes: int) -> Iterator[tuple[int, memoryview]]:
    """``(offset, data)`` of each chunk of the concatenation of ``parts``, ``chunk_bytes`` at a time.

    A chunk inside one part is a view of it (no copy); one that straddles parts is joined (at most
    ``chunk_bytes`` copied). Empty parts are skipped; every chunk but the last is ``chunk_bytes`` long.
    """
    pending: list[memoryview] = []
    size = 0
    offset = 0
    for part in parts:
        view = part.cast("B") if part.format != "B" or part.ndim != 1 else part
        pos = 0
        while pos < view.nbytes:
            take = min(chunk_bytes - size, view.nbytes - pos)
            pending.append(view[pos : pos + take])
            size += take
            pos += take
            if size == chunk_bytes:
                yield offset, pending[0] if len(pending) == 1 else memoryview(b"".join(pending))
                offset += size
                pending, size = [], 0
    if size:
        yield offset, pending[0] if len(pending) == 1 else memoryview(b"".join(pending))


def parts_chunk_frames(
    request_id: int,
    parts: Sequence[memoryview],
    total: int,
    chunk_bytes: int,
    *,
    hasher: Hasher | None = None,
    trailing: Callable[[], bytes] | None = None,
    algorithm: str = hashing.SHA256,
) -> Iterator[bytes]:
    """The Chunk frames carrying ``parts`` end to end as one payload of ``total`` bytes (section 7.3).

    With ``hasher``, each chunk's bytes are fed to it as they are cut (a download's digest, sent in the
    terminal reply). With ``trailing``, the last chunk carries ``trailing()`` as the upload's trailing
    digest (section 7.3.26), in the field of ``algorithm`` (section 7.5.8).
    """
    pieces = parts_chunk_frame_pieces(
        request_id, parts, total, chunk_bytes, hasher=hasher, trailing=trailing, algorithm=algorithm
    )
    for frame in pieces:
        yield b"".join(frame)


def parts_chunk_frame_pieces(
    request_id: int,
    parts: Sequence[memoryview],
    total: int,
    chunk_bytes: int,
    *,
    hasher: Hasher | None = None,
    trailing: Callable[[], bytes] | None = None,
    algorithm: str = hashing.SHA256,
) -> Iterator[ChunkPieces]:
    """:func:`parts_chunk_frames` as ``(head, data, tail)`` pieces, ``data`` a view of the parts where a
    chunk lies inside one of them (no copy), for a frame writer of the I/O layer (:mod:`fedproto.wsframes`).
    """
    sha = algorithm == hashing.SHA256
    for offset, data in payload_parts(parts, chunk_bytes):
        if hasher is not None:
            hasher.update(data)
        last = offset + data.nbytes >= total
        trailer = trailing() if trailing is not None and last else b""
        yield codec.encode_chunk_pieces(
            request_id, offset, data, total, trailer if sha else b"", digest=b"" if sha else trailer
        )


@dataclass(frozen=True, slots=True)
class RawSlice:
    """Whole elements of one tensor, as bytes: ``data`` holds elements from element ``start`` of ``entry``.

    ``data`` aliases the received frame (or a small carry buffer) and is valid only until the next chunk.
    """

    entry: WeightsEntry
    start: int
    data: memoryview

    def values(self) -> torch.Tensor:
        """``data`` as a flat, read-only tensor of the entry's dtype (no copy)."""
        return codec.flat_tensor_view(self.entry.dtype, self.data)


@dataclass(slots=True)
class WeightsStream:
    """A chunked weights download being received: checked, hashed and cut into :class:`RawSlice` s.

    ``max_chunk`` is the largest chunk allowed (the server's ``chunk_bytes``). Chunks must follow the
    rules of section 7.3.33 (offsets contiguous from 0, ``total_bytes`` the manifest's, 1 to ``max_chunk``
    bytes each); a chunk that breaks them raises :class:`DataLossError`.
    """

    manifest: WeightsManifest
    hasher: Hasher
    max_chunk: int
    received: int = 0
    _index: int = 0
    _carry: bytearray = field(default_factory=bytearray)

    def add(self, offset: int, data: bytes | memoryview, total: int) -> list[RawSlice]:
        """Take one chunk; its whole elements, tensor by tensor (a straddling element's start is kept)."""
        size = len(data)
        if total != self.manifest.total_bytes:
            raise DataLossError(f"chunk says total_bytes={total}, the manifest {self.manifest.total_bytes}")
        if offset != self.received:
            raise DataLossError(f"chunk at offset {offset}, expected {self.received}")
        if size == 0 or (self.max_chunk and size > self.max_chunk):
            raise DataLossError(f"chunk of {size} bytes (allowed: 1 to {self.max_chunk})")
        if offset + size > total:
            raise DataLossError("chunks run past the manifest's total_bytes")
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        self.hasher.update(view)
        self.received += size
        slices = self._cut(offset, view)
        for part in slices:  # section 7.2.7, as an inline tensor is checked
            if part.entry.dtype is torch.bool and part.data.nbytes and max(part.data) > 1:
                raise DataLossError(f"bool tensor {part.entry.name!r} holds bytes other than 0 and 1")
        return slices

    def _cut(self, offset: int, view: memoryview) -> list[RawSlice]:
        slices: list[RawSlice] = []
        pos = 0  # position in view
        entries = self.manifest.entries
        while pos < view.nbytes:
            entry = entries[self._index]
            while offset + pos >= entry.offset + entry.nbytes:  # past it (or it is empty)
                self._index += 1
                entry = entries[self._index]
            width = entry.nbytes // entry.numel
            inside = offset + pos - entry.offset  # bytes of this entry before pos
            end = min(view.nbytes, entry.offset + entry.nbytes - offset)  # its end, in view positions
            if self._carry:  # complete the element a previous chunk began
                need = width - len(self._carry)
                take = min(need, end - pos)
                self._carry += view[pos : pos + take]
                pos += take
                if len(self._carry) == width:
                    element = (inside + take) // width - 1
                    slices.append(RawSlice(entry, element, memoryview(bytes(self._carry))))
                    self._carry.clear()
                continue
            whole = (end - pos) // width * width
            if whole:
                slices.append(RawSlice(entry, inside // width, view[pos : pos + whole]))
                pos += whole
            if pos < end:  # the start of an element the next chunk finishes
                self._carry += view[pos:end]
                pos = end
        return slices

    def finish(self, expected: bytes, algorithm: str) -> ProtocolError | None:
        """What is wrong with the download once its terminal reply came, or None (sections 7.3.22, 12.8)."""
        if self.received != self.manifest.total_bytes:
            return DataLossError(
                f"chunked weights ended after {self.received} of {self.manifest.total_bytes} bytes"
            )
        if self.hasher.digest() != expected:
            return DataLossError(f"the weights do not match their {algorithm} digest")
        return None
