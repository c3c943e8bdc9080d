"""Chunked transfers (section 7.3), with no I/O: assembling chunks, checking digests, cutting frames.

Both sessions use these: the server assembles uploads and cuts downloads, the client cuts uploads and
assembles downloads. Bytes land in place in one buffer and are hashed as they arrive, so a transfer is
verified without a second pass over its payload.

Every digest here is under the algorithm the connection negotiated (section 7.5): SHA-256 travels in the
``sha256`` fields, any other algorithm in the ``digest`` fields, with the ``sha256`` fields then empty
(section 7.5.8). :func:`digest_field` names the field in force.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from fedproto import codec, hashing
from fedproto.errors import DataLossError, InvalidArgumentError, MalformedError, ProtocolError
from fedproto.hashing import Hasher
from fedproto.types import ObjectInfo, TensorInfo
from fedproto_pb.v1.envelope_pb2 import Envelope
from fedproto_pb.v1.objects_pb2 import GetObjectReply, SendObjectRequest
from fedproto_pb.v1.tensor_pb2 import Chunk
from fedproto_pb.v1.training_pb2 import SetWeightsRequest

__all__ = [
    "Assembly",
    "ChunkPieces",
    "Upload",
    "carried_digest",
    "check_trailing_digest",
    "check_upload_digest",
    "chunk_frame_pieces",
    "chunk_frame_size",
    "chunk_frames",
    "digest_field",
    "download_chunk_bytes",
    "download_error",
    "inline_error",
    "inline_limit",
    "inline_reply_frame",
    "with_digest",
]

#: One chunk envelope in three pieces whose concatenation is the frame: head, the data itself, tail.
ChunkPieces = tuple[bytes, memoryview, bytes]
#: Bytes a chunk envelope adds around its data (tags, varints of a 64-bit id, offset and total).
_CHUNK_FRAME_OVERHEAD = 64
#: Room left for a GetObjectReply's metadata (id, tags, description) around an inline tensor.
_INLINE_REPLY_OVERHEAD = 4096


def digest_field(algorithm: str) -> str:
    """The field of ``TensorInfo`` and ``Chunk`` that carries a digest under ``algorithm`` (section 7.5.8)."""
    return "sha256" if algorithm == hashing.SHA256 else "digest"


class _CarriesDigest(Protocol):
    """A ``TensorInfo`` (the record or the message) or a ``Chunk``: the two digest fields of section 7.5.8."""

    @property
    def sha256(self) -> bytes: ...

    @property
    def digest(self) -> bytes: ...


def carried_digest(message: _CarriesDigest, algorithm: str) -> bytes:
    """The digest a ``TensorInfo`` (record or message) or ``Chunk`` carries under ``algorithm``.

    The other field is not looked at: under SHA-256 the ``digest`` fields are ignored (section 7.5.7).
    """
    return bytes(getattr(message, digest_field(algorithm)))


def with_digest(info: TensorInfo, algorithm: str, value: bytes) -> TensorInfo:
    """``info`` with ``value`` in the digest field of ``algorithm`` and the other field empty (7.5.8)."""
    if algorithm == hashing.SHA256:
        return replace(info, sha256=value, digest=b"")
    return replace(info, sha256=b"", digest=value)


@dataclass(slots=True)
class Assembly:
    """A chunked payload being received: bytes land in place, the digest is updated as they arrive."""

    total: int
    buffer: bytearray | memoryview
    hasher: Hasher
    #: every chunk but the last must be exactly the chunk size (uploads, section 7.3.5); downloads may
    #: use smaller chunks when the client's frame limit asks for it
    full_chunks: bool = False
    received: int = 0

    def add(self, offset: int, data: bytes | memoryview, total: int, max_chunk: int) -> None:
        """Take one chunk, or raise INVALID_ARGUMENT when it breaks the order or the sizes of section 7.3."""
        size = len(data)
        if total != self.total:
            raise InvalidArgumentError(f"chunk says total_bytes={total}, expected {self.total}")
        if offset != self.received:
            raise InvalidArgumentError(f"chunk at offset {offset}, expected {self.received}")
        if size == 0 or (max_chunk and size > max_chunk):
            raise InvalidArgumentError(f"chunk of {size} bytes (allowed: 1 to {max_chunk})")
        if self.full_chunks and max_chunk and size < max_chunk and offset + size != self.total:
            raise InvalidArgumentError(f"a chunk of {size} bytes before the last one (section 7.3.5)")
        if self.received + size > self.total:
            raise InvalidArgumentError("chunks run past the announced total_bytes")
        end = self.received + size
        self.buffer[self.received : end] = data
        # hash the bytes in place, not the frame: a background hasher then holds no frame alive
        self.hasher.update(memoryview(self.buffer)[self.received : end])
        self.received = end

    @property
    def complete(self) -> bool:
        """Whether every announced byte has arrived."""
        return self.received == self.total


@dataclass(slots=True)
class Upload:
    """A chunked upload the server is receiving: the request, its header and its bytes.

    ``algorithm`` is the connection's digest algorithm (section 7.5): it says which fields carry the
    upload's digest and how it is computed. ``kind`` is the request's: a ``send_object`` (section 7.3),
    or a ``set_weights`` whose manifest's payload travels as one run of bytes (section 12.8), with
    ``info`` describing that run.
    """

    request: SendObjectRequest | SetWeightsRequest
    info: TensorInfo
    assembly: Assembly
    deadline: float | None
    algorithm: str = hashing.SHA256
    kind: str = "send_object"

    @property
    def announced(self) -> bytes:
        """The digest the header gave (empty when the last chunk is to bring it, section 7.3.26)."""
        return carried_digest(self.info, self.algorithm)

    def verify(self, trailing_digest: bytes = b"") -> None:
        """Check the completed payload against its digest (DATA_LOSS) and record the verified digest.

        The handler stores the header's TensorInfo: it gets the verified digest, so nobody hashes the
        payload again (an empty upload has none to give and gets the digest of nothing, section 7.3.28).
        """
        expected = self.announced or trailing_digest
        if expected and self.assembly.hasher.digest() != expected:
            raise DataLossError(f"payload does not match its {self.algorithm} digest")
        if not self.announced:
            setattr(
                self.request.chunked, digest_field(self.algorithm), expected or self.assembly.hasher.digest()
            )


def check_upload_digest(info: TensorInfo, algorithm: str) -> None:
    """Section 7.3.2 under ``algorithm`` (section 7.5.8): the header's digest, when given, has its length.

    Under another algorithm than SHA-256 the header's ``sha256`` must be empty (INVALID_ARGUMENT).
    """
    field, size = digest_field(algorithm), hashing.DIGEST_SIZES[algorithm]
    if algorithm != hashing.SHA256 and info.sha256:
        raise InvalidArgumentError(
            f"chunked.sha256 is set, but this connection's digest is {algorithm}: give the {size}-byte "
            f"{algorithm} digest in chunked.digest and leave sha256 empty (section 7.5.8)"
        )
    given = carried_digest(info, algorithm)
    if len(given) not in (0, size):
        raise InvalidArgumentError(
            f"chunked.{field} has {len(given)} bytes; give the {size}-byte {algorithm} digest of the payload "
            "here or in the last chunk"
        )


def check_trailing_digest(upload: Upload, sha256: bytes, digest: bytes = b"") -> None:
    """Section 7.3.27: only the last chunk carries a digest, and only when the header left it out.

    ``sha256`` and ``digest`` are the chunk's two digest fields; the connection's algorithm says which
    one counts (section 7.5.8): under SHA-256 ``digest`` is ignored, under another ``sha256`` must be empty.
    """
    algorithm = upload.algorithm
    if algorithm == hashing.SHA256:
        given = sha256
    elif sha256:
        raise InvalidArgumentError(
            f"a chunk carries a sha256, but this connection's digest is {algorithm}: the last chunk's "
            "digest goes in Chunk.digest (section 7.5.8)"
        )
    else:
        given = digest
    field, size = digest_field(algorithm), hashing.DIGEST_SIZES[algorithm]
    last = upload.assembly.complete
    if given:
        if upload.announced:
            raise InvalidArgumentError(
                f"the upload's header already gave its {algorithm} digest; a chunk may not"
            )
        if not last:
            raise InvalidArgumentError(f"only the last chunk of an upload may carry its {algorithm} digest")
        if len(given) != size:
            raise InvalidArgumentError(f"the last chunk's {field} has {len(given)} bytes, not {size}")
    elif last and not upload.announced:
        raise InvalidArgumentError(
            f"the upload's header left its digest empty, so its last chunk must carry it in {field}"
        )


def download_error(
    assembly: Assembly, reply: GetObjectReply, algorithm: str = hashing.SHA256
) -> ProtocolError | None:
    """What is wrong with a chunked download that ended with ``reply``, or None when it checks out.

    The reply must carry the payload's digest under ``algorithm`` (sections 7.3.16, 7.3.22, 7.5.8).
    """
    if reply.HasField("tensor"):
        return MalformedError("chunked download ended with an inline tensor")
    if not assembly.complete:
        return DataLossError("chunked download ended before all bytes arrived")
    if assembly.hasher.digest() != carried_digest(reply.info.tensor, algorithm):
        return DataLossError(f"downloaded payload does not match its {algorithm} digest")
    return None


def chunk_frames(
    request_id: int,
    view: memoryview,
    chunk_bytes: int,
    digest: Callable[[], bytes] | None = None,
    algorithm: str = hashing.SHA256,
) -> Iterator[bytes]:
    """Yield the Chunk frames that carry ``view`` for one transfer (section 7.3).

    With ``digest``, the last chunk carries ``digest()`` as its trailing digest (section 7.3.26), in the
    field of ``algorithm`` (section 7.5.8); it is asked for only once every earlier chunk has been yielded.
    """
    for pieces in chunk_frame_pieces(request_id, view, chunk_bytes, digest, algorithm):
        yield b"".join(pieces)


def chunk_frame_pieces(
    request_id: int,
    view: memoryview,
    chunk_bytes: int,
    digest: Callable[[], bytes] | None = None,
    algorithm: str = hashing.SHA256,
) -> Iterator[ChunkPieces]:
    """:func:`chunk_frames` as ``(head, data, tail)`` pieces, ``data`` a view of ``view`` (no copy).

    The I/O layers write these with a frame writer of their own (:mod:`fedproto.wsframes`).
    """
    total = view.nbytes
    trailing_sha = algorithm == hashing.SHA256
    for offset in range(0, total, chunk_bytes):
        end = offset + chunk_bytes
        trailer = digest() if digest is not None and end >= total else b""
        yield codec.encode_chunk_pieces(
            request_id,
            offset,
            view[offset:end],
            total,
            trailer if trailing_sha else b"",
            digest=b"" if trailing_sha else trailer,
        )


def inline_error(reply: GetObjectReply, algorithm: str = hashing.SHA256) -> ProtocolError | None:
    """What is wrong with an inline GetObjectReply's tensor, or None (section 7.3.34: DATA_LOSS).

    The tensor must be valid (section 7.2) and, when the reply's info carries a digest under
    ``algorithm`` (section 7.5.8), match it.
    """
    try:
        codec.check_tensor(reply.tensor)
    except ProtocolError as error:
        return DataLossError(f"the inline tensor is not valid: {error.message}")
    expected = carried_digest(reply.info.tensor, algorithm)
    if expected and hashing.digest(algorithm, reply.tensor.data) != expected:
        return DataLossError(f"the inline tensor does not match its {algorithm} digest")
    return None


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def chunk_frame_size(request_id: int, offset: int, length: int, total: int, digest_bytes: int = 0) -> int:
    """The exact size of a chunk envelope with ``length`` bytes of data, without building it.

    Chunk fields: offset 1, data 2, total_bytes 3, sha256 4 (one-byte tags); the envelope's chunk is
    field 18 (a two-byte tag). Section 7.3.30 says when the 64-byte margin of section 7.3.25 holds.
    """
    chunk = Chunk(offset=offset, total_bytes=total, sha256=bytes(digest_bytes)).ByteSize()
    chunk += (1 + _varint_size(length) + length) if length else 0
    return Envelope(request_id=request_id).ByteSize() + 2 + _varint_size(chunk) + chunk


def inline_limit(chunk_bytes: int, client_max_frame: int) -> int:
    """The largest payload a download sends inline: a chunk's worth, within the client's frame limit."""
    if client_max_frame:
        return min(chunk_bytes, max(client_max_frame - _INLINE_REPLY_OVERHEAD, 0))
    return chunk_bytes


def download_chunk_bytes(chunk_bytes: int, client_max_frame: int) -> int:
    """The chunk size of a download: every chunk frame must fit the client's own limit (section 3.4)."""
    if client_max_frame:
        return max(1, min(chunk_bytes, client_max_frame - _CHUNK_FRAME_OVERHEAD))
    return chunk_bytes


def inline_reply_frame(request_id: int, info: ObjectInfo, view: memoryview) -> bytes:
    """The GetObjectReply frame that carries a small object inline (section 7.3.15), one payload copy."""
    envelope = Envelope(request_id=request_id)
    envelope.get_object_reply.info.CopyFrom(codec.object_info_to_proto(info))
    envelope.get_object_reply.tensor.CopyFrom(codec.inline_tensor_header(info.tensor))
    return codec.encode_with_payload(envelope, ("get_object_reply", "tensor", "data"), view)
