/**
 * Tensors on the wire (docs/protocol.md §7): dtypes and their widths, validation of `Tensor` and
 * `TensorInfo`, the {@link HostTensor} domain type, SHA-256 digests, and chunked transfer in both
 * directions ({@link chunkRanges} to send, {@link ChunkAssembler} to receive).
 *
 * Element bytes are kept as they arrived (little-endian, row-major, §7.2.1): nothing here reinterprets
 * them, so every bit pattern (NaN payloads, negative zero, §7.1.3) survives a store and a fetch.
 */
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError, DataLossError } from "./errors.js";
import {
  DType,
  TensorSchema,
  TensorInfoSchema,
  ChunkSchema,
  type Chunk as ProtoChunk,
  type Tensor as ProtoTensor,
  type TensorInfo as ProtoTensorInfo,
} from "./proto.js";
import {
  DIGEST_SIZES,
  SHA256,
  carriedDigest,
  createPayloadHasher,
  digestFields,
  otherDigestField,
  type PayloadHasher,
} from "./digests.js";

/** Byte width of each valid dtype (§7.1.1); UNSPECIFIED and unknown values have none. */
export const DTYPE_WIDTHS: ReadonlyMap<DType, number> = new Map<DType, number>([
  [DType.DTYPE_FLOAT16, 2],
  [DType.DTYPE_FLOAT32, 4],
  [DType.DTYPE_FLOAT64, 8],
  [DType.DTYPE_BFLOAT16, 2],
  [DType.DTYPE_INT8, 1],
  [DType.DTYPE_INT16, 2],
  [DType.DTYPE_INT32, 4],
  [DType.DTYPE_INT64, 8],
  [DType.DTYPE_UINT8, 1],
  [DType.DTYPE_BOOL, 1],
  [DType.DTYPE_COMPLEX64, 8],
  [DType.DTYPE_COMPLEX128, 16],
]);

/** The SHA-256 of the empty payload (§7.3.11). */
export const EMPTY_SHA256: Uint8Array = sha256(new Uint8Array(0));

/** The byte width of `dtype`, or throws INVALID_ARGUMENT for UNSPECIFIED or an unknown value (§7.2.7). */
export function dtypeWidth(dtype: DType | number): number {
  const width = DTYPE_WIDTHS.get(dtype);
  if (width === undefined) {
    throw new InvalidArgumentError(`invalid dtype ${dtypeName(dtype)}`);
  }
  return width;
}

/** The spec's short name of a dtype (`FLOAT32`), or `DTYPE_<n>` for a value this schema does not know. */
export function dtypeName(dtype: DType | number): string {
  const name = (DType as unknown as Record<number, string | undefined>)[dtype];
  return name === undefined ? `DTYPE_${dtype}` : name.replace(/^DTYPE_/, "");
}

/** The raw 32-byte SHA-256 of `data` (§1.3.3). */
export function sha256(data: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(data).digest());
}

/** Constant-size equality of two byte strings (digests are not secret, but this keeps one helper). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) {
    return false;
  }
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      return false;
    }
  }
  return true;
}

/**
 * The number of elements of `shape` (product, 1 for a 0-d tensor, §7.2.4), after checking every entry
 * is >= 0 (§7.2.3) and the product is exactly representable.
 */
export function elementCount(shape: readonly (bigint | number)[]): bigint {
  let count = 1n;
  for (const dim of shape) {
    const d = BigInt(dim);
    if (d < 0n) {
      throw new InvalidArgumentError(`negative dimension ${d} in shape [${shape.join(", ")}]`);
    }
    count *= d;
  }
  return count;
}

/** product(shape) x width(dtype) as a bigint (a shape may describe more bytes than a Number holds). */
export function expectedNbytes(dtype: DType | number, shape: readonly (bigint | number)[]): bigint {
  const width = dtypeWidth(dtype);
  return elementCount(shape) * BigInt(width);
}

/**
 * Checks a `Tensor` message against §7.2 and throws INVALID_ARGUMENT naming what is wrong: a known
 * dtype, non-negative shape, `len(data)` = product(shape) x width, and only 0/1 bytes for BOOL.
 */
export function validateTensor(tensor: ProtoTensor, what = "tensor"): void {
  let expected: bigint;
  try {
    expected = expectedNbytes(tensor.dtype, tensor.shape);
  } catch (err) {
    throw new InvalidArgumentError(`${what}: ${(err as Error).message}`);
  }
  if (BigInt(tensor.data.length) !== expected) {
    throw new InvalidArgumentError(
      `${what}: ${tensor.data.length} data bytes, but ${dtypeName(tensor.dtype)} with shape ` +
        `[${tensor.shape.join(", ")}] needs ${expected}`,
    );
  }
  if (tensor.dtype === DType.DTYPE_BOOL) {
    for (let i = 0; i < tensor.data.length; i++) {
      const byte = tensor.data[i]!;
      if (byte > 1) {
        throw new InvalidArgumentError(`${what}: BOOL element ${i} is byte ${byte}, not 0 or 1`);
      }
    }
  }
}

/**
 * Checks a `TensorInfo` (§7.2.8: `nbytes` takes the place of `len(data)`) and, when `checkDigest`,
 * that the digest field in force under `algorithm` is empty or of the algorithm's length and the other
 * one empty (§7.3.2, §7.5.8).
 */
export function validateTensorInfo(
  info: ProtoTensorInfo,
  what = "tensor info",
  checkDigest = true,
  algorithm: string = SHA256,
): void {
  let expected: bigint;
  try {
    expected = expectedNbytes(info.dtype, info.shape);
  } catch (err) {
    throw new InvalidArgumentError(`${what}: ${(err as Error).message}`);
  }
  if (info.nbytes !== expected) {
    throw new InvalidArgumentError(
      `${what}: nbytes ${info.nbytes}, but ${dtypeName(info.dtype)} with shape [${info.shape.join(", ")}] ` +
        `needs ${expected}`,
    );
  }
  if (!checkDigest) {
    return;
  }
  const carried = carriedDigest(info, algorithm);
  const size = DIGEST_SIZES.get(algorithm) ?? 32;
  const field = algorithm === SHA256 ? "sha256" : "digest";
  if (carried.length !== 0 && carried.length !== size) {
    throw new InvalidArgumentError(`${what}: ${field} has ${carried.length} bytes, not ${size} (or empty)`);
  }
  if (algorithm !== SHA256 && otherDigestField(info, algorithm).length !== 0) {
    throw new InvalidArgumentError(`${what}: sha256 must be empty under the digest ${algorithm} (§7.5.8)`);
  }
}

/**
 * A tensor held in memory: dtype, shape (safe integers) and the raw little-endian element bytes.
 * Built only through {@link HostTensor.create} or {@link tensorFromProto}, so it is always valid (§7.2).
 */
export class HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: Uint8Array;

  private constructor(dtype: DType, shape: readonly number[], data: Uint8Array) {
    this.dtype = dtype;
    this.shape = shape;
    this.data = data;
  }

  /** A validated tensor; throws INVALID_ARGUMENT when the parts break §7.2. */
  static create(dtype: DType, shape: readonly (number | bigint)[], data: Uint8Array): HostTensor {
    const proto = create(TensorSchema, { dtype, shape: shape.map((d) => BigInt(d)), data });
    return tensorFromProto(proto);
  }

  /** The number of data bytes. */
  get nbytes(): number {
    return this.data.length;
  }

  /** The SHA-256 of the data. */
  sha256(): Uint8Array {
    return sha256(this.data);
  }
}

/** A valid `Tensor` message as a {@link HostTensor}; throws INVALID_ARGUMENT when it breaks §7.2. */
export function tensorFromProto(tensor: ProtoTensor, what = "tensor"): HostTensor {
  validateTensor(tensor, what);
  const shape = tensor.shape.map((d) => Number(d));
  // Reaching here means data.length = product(shape) x width, so every dimension fits in a Number.
  return Reflect.construct(HostTensor, [tensor.dtype, Object.freeze(shape), tensor.data]) as HostTensor;
}

/** A {@link HostTensor} as a `Tensor` message (sharing its data bytes). */
export function tensorToProto(tensor: HostTensor): ProtoTensor {
  return create(TensorSchema, {
    dtype: tensor.dtype,
    shape: tensor.shape.map((d) => BigInt(d)),
    data: tensor.data,
  });
}

/** The `TensorInfo` of a tensor: dtype, shape, nbytes and (when given) its digest under `algorithm`. */
export function tensorInfoOf(tensor: HostTensor, digest?: Uint8Array, algorithm: string = SHA256): ProtoTensorInfo {
  return create(TensorInfoSchema, {
    dtype: tensor.dtype,
    shape: tensor.shape.map((d) => BigInt(d)),
    nbytes: BigInt(tensor.nbytes),
    ...digestFields(algorithm, digest),
  });
}

/** One piece of a payload to send: `[offset, offset + length)`. */
export interface ChunkRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * Splits `totalBytes` into contiguous pieces of `chunkBytes` (the last may be shorter), as §7.3.4 and
 * §7.3.5 require. An empty payload has no chunks (§7.3.11).
 */
export function* chunkRanges(totalBytes: number, chunkBytes: number): Generator<ChunkRange> {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(`chunk size must be a positive integer, not ${chunkBytes}`);
  }
  for (let offset = 0; offset < totalBytes; offset += chunkBytes) {
    yield { offset, length: Math.min(chunkBytes, totalBytes - offset) };
  }
}

/** A `Chunk` message for `data[offset, offset + length)`, sharing the bytes (trailer under `algorithm`). */
export function makeChunk(data: Uint8Array, range: ChunkRange, digest?: Uint8Array, algorithm: string = SHA256): ProtoChunk {
  return create(ChunkSchema, {
    offset: BigInt(range.offset),
    data: data.subarray(range.offset, range.offset + range.length),
    totalBytes: BigInt(data.length),
    ...digestFields(algorithm, digest),
  });
}

/** Settings of a {@link ChunkAssembler}. */
export interface ChunkAssemblerOptions {
  /** The payload size announced (`TensorInfo.nbytes`). */
  totalBytes: number;
  /** The most data bytes one chunk may carry (`limits.chunk_bytes`, or the sender's chunk size). */
  maxChunkBytes: number;
  /**
   * True for an upload whose header left `sha256` empty: the last chunk MUST carry the digest
   * (§7.3.26, §7.3.27). False: every chunk's `sha256` MUST be empty (uploads with a header digest);
   * `"ignore"`: chunk digests are ignored (downloads, §7.3.29).
   */
  trailingDigest: boolean | "ignore";
  /** The connection's digest algorithm (§7.5); `sha256` when omitted. */
  algorithm?: string;
}

/**
 * Receives the chunks of one transfer, checks §7.3.4 to §7.3.7 and §7.3.27 for each, hashes the
 * bytes as they arrive, and hands out the assembled payload once the digest matches (§7.3.10, §7.3.22).
 *
 * A rule broken by a chunk throws INVALID_ARGUMENT; a digest mismatch throws DATA_LOSS. After a throw
 * the assembler must be dropped (the partial data is discarded, §7.3.8).
 */
export class ChunkAssembler {
  readonly totalBytes: number;
  private readonly maxChunkBytes: number;
  private readonly trailingDigest: boolean | "ignore";
  // Pieces are kept as they come and joined once at the end: the announced size is not allocated before
  // the bytes actually arrive.
  private readonly pieces: Uint8Array[] = [];
  private readonly hash: PayloadHasher;
  /** The digest algorithm in force (§7.5). */
  readonly algorithm: string;
  private received = 0;
  private lastChunkShort = false;
  private firstChunkBytes = 0;
  private trailing: Uint8Array | undefined;
  /** The digest of the payload once {@link finish} checked it (kept so nobody hashes it again, §7.5.11). */
  verified: Uint8Array | undefined;

  constructor(options: ChunkAssemblerOptions) {
    this.totalBytes = options.totalBytes;
    this.maxChunkBytes = options.maxChunkBytes;
    this.trailingDigest = options.trailingDigest;
    this.algorithm = options.algorithm ?? SHA256;
    this.hash = createPayloadHasher(this.algorithm);
  }

  /** Bytes received so far. */
  get receivedBytes(): number {
    return this.received;
  }

  /** True once chunks covered `[0, totalBytes)`. */
  get complete(): boolean {
    return this.received === this.totalBytes;
  }

  /** The digest the last chunk carried (uploads with a trailing digest), once complete. */
  get trailingSha256(): Uint8Array | undefined {
    return this.trailing;
  }

  /** Accepts the next chunk or throws INVALID_ARGUMENT naming the rule it breaks. */
  push(chunk: ProtoChunk): void {
    const length = chunk.data.length;
    if (this.complete) {
      throw new InvalidArgumentError(`chunk at offset ${chunk.offset} after the payload was complete (§7.3.7)`);
    }
    if (chunk.totalBytes !== BigInt(this.totalBytes)) {
      throw new InvalidArgumentError(
        `chunk total_bytes ${chunk.totalBytes} differs from the announced ${this.totalBytes} (§7.3.6)`,
      );
    }
    if (chunk.offset !== BigInt(this.received)) {
      throw new InvalidArgumentError(
        `chunk offset ${chunk.offset}, expected ${this.received}: chunks are contiguous and in order (§7.3.4)`,
      );
    }
    if (length < 1 || length > this.maxChunkBytes) {
      throw new InvalidArgumentError(
        `chunk of ${length} bytes; each chunk carries 1 to ${this.maxChunkBytes} bytes (§7.3.5)`,
      );
    }
    if (this.lastChunkShort) {
      throw new InvalidArgumentError(`only the last chunk may be shorter than ${this.maxChunkBytes} bytes (§7.3.5)`);
    }
    if (this.received + length > this.totalBytes) {
      throw new InvalidArgumentError(
        `chunk [${this.received}, ${this.received + length}) extends past total_bytes ${this.totalBytes} (§7.3.7)`,
      );
    }
    const last = this.received + length === this.totalBytes;
    if (this.trailingDigest !== "ignore") {
      // §7.3.27 with the field and length of the algorithm in force (§7.5.8)
      const carried = carriedDigest(chunk, this.algorithm);
      const field = this.algorithm === SHA256 ? "sha256" : "digest";
      const size = DIGEST_SIZES.get(this.algorithm) ?? 32;
      const wantDigest = this.trailingDigest && last;
      if (this.algorithm !== SHA256 && otherDigestField(chunk, this.algorithm).length !== 0) {
        throw new InvalidArgumentError(`a chunk carries a sha256 under the digest ${this.algorithm} (§7.5.8)`);
      }
      if (wantDigest && carried.length !== size) {
        throw new InvalidArgumentError(
          carried.length === 0
            ? `the last chunk carries no ${field}, and the header left it empty (§7.3.27)`
            : `the last chunk's ${field} has ${carried.length} bytes, not ${size} (§7.3.27)`,
        );
      }
      if (!wantDigest && carried.length !== 0) {
        throw new InvalidArgumentError(
          this.trailingDigest
            ? `only the last chunk of an upload may carry a ${field} (§7.3.27)`
            : `a chunk carries a ${field} although the header gave one (§7.3.27)`,
        );
      }
      if (wantDigest) {
        this.trailing = new Uint8Array(carried);
      }
    }
    if (this.received === 0) {
      this.firstChunkBytes = length;
    }
    // Uploads use exactly chunk_bytes (§7.3.5); a download may use smaller chunks to fit the client's
    // frame limit (§7.3.19), so there the first chunk sets the size that only the last may undercut.
    const fullSize = this.trailingDigest === "ignore" ? this.firstChunkBytes : this.maxChunkBytes;
    if (length < fullSize) {
      this.lastChunkShort = true;
    }
    this.pieces.push(chunk.data);
    this.hash.update(chunk.data);
    this.received += length;
  }

  /**
   * The assembled payload, after checking that it is complete and that its SHA-256 equals `expected`
   * (or the trailing digest when `expected` is omitted); throws DATA_LOSS otherwise.
   */
  finish(expected?: Uint8Array): Uint8Array {
    if (!this.complete) {
      throw new DataLossError(`payload incomplete: ${this.received} of ${this.totalBytes} bytes received`);
    }
    const want = expected ?? this.trailing;
    if (want === undefined) {
      throw new DataLossError(`no ${this.algorithm} digest to check the payload against`);
    }
    // Every byte is written just below: a zero-filled allocation would only add a pass over the payload.
    // (allocUnsafeSlow: an ArrayBuffer of its own; handed on as a plain Uint8Array, not a Buffer)
    const raw = Buffer.allocUnsafeSlow(this.totalBytes);
    const out = new Uint8Array(raw.buffer, raw.byteOffset, raw.length);
    let offset = 0;
    for (const piece of this.pieces) {
      out.set(piece, offset);
      offset += piece.length;
    }
    this.pieces.length = 0;
    this.verified = this.hash.finish(out);
    if (!bytesEqual(this.verified, want)) {
      throw new DataLossError(`the ${this.algorithm} digest of the assembled payload does not match the announced one`);
    }
    return out;
  }
}
