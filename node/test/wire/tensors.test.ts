import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  ChunkAssembler,
  DTYPE_WIDTHS,
  EMPTY_SHA256,
  HostTensor,
  chunkRanges,
  dtypeName,
  dtypeWidth,
  makeChunk,
  sha256,
  tensorFromProto,
  tensorInfoOf,
  tensorToProto,
  validateTensor,
  validateTensorInfo,
} from "../../src/wire/tensors.js";
import { DataLossError, InvalidArgumentError } from "../../src/wire/errors.js";
import { ChunkSchema, DType, TensorInfoSchema, TensorSchema } from "../../src/wire/proto.js";

const bytes = (n: number, seed = 1): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

test("dtype widths follow §7.1.1", () => {
  assert.equal(DTYPE_WIDTHS.size, 12);
  assert.equal(dtypeWidth(DType.DTYPE_FLOAT16), 2);
  assert.equal(dtypeWidth(DType.DTYPE_COMPLEX128), 16);
  assert.equal(dtypeWidth(DType.DTYPE_BOOL), 1);
  assert.throws(() => dtypeWidth(DType.DTYPE_UNSPECIFIED), InvalidArgumentError);
  assert.throws(() => dtypeWidth(42), InvalidArgumentError);
  assert.equal(dtypeName(DType.DTYPE_FLOAT32), "FLOAT32");
  assert.equal(dtypeName(42), "DTYPE_42");
});

test("the empty digest is the SHA-256 of nothing (§7.3.11)", () => {
  assert.equal(
    Buffer.from(EMPTY_SHA256).toString("hex"),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
});

test("valid tensors of every dtype and shape round-trip byte for byte", () => {
  const shapes: number[][] = [[], [0], [3], [2, 3], [1, 0, 4], [2, 1, 2]];
  for (const [dtype, width] of DTYPE_WIDTHS) {
    for (const shape of shapes) {
      const n = shape.reduce((a, b) => a * b, 1) * width;
      const data = dtype === DType.DTYPE_BOOL ? bytes(n).map((b) => b & 1) : bytes(n);
      const tensor = HostTensor.create(dtype, shape, data);
      assert.deepEqual(tensor.shape, shape);
      const back = tensorFromProto(tensorToProto(tensor));
      assert.equal(back.dtype, dtype);
      assert.deepEqual(back.shape, shape);
      assert.deepEqual(back.data, data);
      const info = tensorInfoOf(tensor, tensor.sha256());
      validateTensorInfo(info);
      assert.equal(info.nbytes, BigInt(n));
    }
  }
});

test("NaN payloads and negative zero are kept bit for bit (§7.1.3)", () => {
  const data = Uint8Array.from([0x01, 0x00, 0xc0, 0x7f, 0x00, 0x00, 0x00, 0x80]);
  const tensor = HostTensor.create(DType.DTYPE_FLOAT32, [2], data);
  assert.deepEqual(tensorFromProto(tensorToProto(tensor)).data, data);
});

test("invalid tensors are INVALID_ARGUMENT (§7.2.7)", () => {
  const bad = [
    create(TensorSchema, { dtype: DType.DTYPE_UNSPECIFIED, shape: [], data: new Uint8Array(0) }),
    create(TensorSchema, { dtype: 99 as DType, shape: [], data: new Uint8Array(1) }),
    create(TensorSchema, { dtype: DType.DTYPE_FLOAT32, shape: [-1n], data: new Uint8Array(0) }),
    create(TensorSchema, { dtype: DType.DTYPE_FLOAT32, shape: [2n], data: new Uint8Array(7) }),
    create(TensorSchema, { dtype: DType.DTYPE_FLOAT32, shape: [], data: new Uint8Array(0) }),
    create(TensorSchema, { dtype: DType.DTYPE_BOOL, shape: [2n], data: Uint8Array.from([1, 2]) }),
    create(TensorSchema, { dtype: DType.DTYPE_INT8, shape: [1n << 62n, 4n], data: new Uint8Array(0) }),
  ];
  for (const tensor of bad) {
    assert.throws(() => validateTensor(tensor), InvalidArgumentError);
  }
  assert.throws(
    () => validateTensorInfo(create(TensorInfoSchema, { dtype: DType.DTYPE_INT8, shape: [3n], nbytes: 3n, sha256: new Uint8Array(5) })),
    InvalidArgumentError,
  );
  assert.throws(
    () => validateTensorInfo(create(TensorInfoSchema, { dtype: DType.DTYPE_INT8, shape: [3n], nbytes: 4n })),
    InvalidArgumentError,
  );
});

test("chunkRanges covers the payload with full chunks and a shorter last one", () => {
  assert.deepEqual([...chunkRanges(0, 4)], []);
  assert.deepEqual([...chunkRanges(10, 4)], [
    { offset: 0, length: 4 },
    { offset: 4, length: 4 },
    { offset: 8, length: 2 },
  ]);
  assert.throws(() => [...chunkRanges(10, 0)], RangeError);
});

function upload(data: Uint8Array, chunk: number, trailing: boolean): ChunkAssembler {
  const asm = new ChunkAssembler({ totalBytes: data.length, maxChunkBytes: chunk, trailingDigest: trailing });
  const ranges = [...chunkRanges(data.length, chunk)];
  ranges.forEach((range, i) => {
    const last = i === ranges.length - 1;
    asm.push(makeChunk(data, range, trailing && last ? sha256(data) : undefined));
  });
  return asm;
}

test("assembler: header digest and trailing digest both verify (§7.3.10, §7.3.26)", () => {
  const data = bytes(1000);
  assert.deepEqual(upload(data, 256, false).finish(sha256(data)), data);
  const trailing = upload(data, 256, true);
  assert.deepEqual(trailing.trailingSha256, sha256(data));
  assert.deepEqual(trailing.finish(), data);
});

test("assembler: a wrong digest is DATA_LOSS", () => {
  const data = bytes(10);
  assert.throws(() => upload(data, 4, false).finish(sha256(bytes(10, 2))), DataLossError);
});

test("assembler: each broken chunk rule is INVALID_ARGUMENT (§7.3.4-§7.3.7, §7.3.27)", () => {
  const data = bytes(10);
  const fresh = (trailing = false): ChunkAssembler =>
    new ChunkAssembler({ totalBytes: 10, maxChunkBytes: 4, trailingDigest: trailing });
  const chunk = (offset: number, len: number, extra: Partial<{ totalBytes: bigint; sha256: Uint8Array }> = {}) =>
    create(ChunkSchema, {
      offset: BigInt(offset),
      data: data.subarray(offset, offset + len),
      totalBytes: 10n,
      ...extra,
    });
  assert.throws(() => fresh().push(chunk(4, 4)), /offset/); // gap
  assert.throws(() => fresh().push(chunk(0, 0)), /1 to 4/); // empty
  assert.throws(() => fresh().push(chunk(0, 5)), /1 to 4/); // too long
  assert.throws(() => fresh().push(chunk(0, 4, { totalBytes: 11n })), /total_bytes/);
  const short = fresh();
  short.push(chunk(0, 2));
  assert.throws(() => short.push(chunk(2, 4)), /only the last/);
  const past = new ChunkAssembler({ totalBytes: 6, maxChunkBytes: 4, trailingDigest: false });
  past.push(create(ChunkSchema, { offset: 0n, data: bytes(4), totalBytes: 6n }));
  assert.throws(() => past.push(create(ChunkSchema, { offset: 4n, data: bytes(4), totalBytes: 6n })), /past/);
  assert.throws(() => fresh(false).push(chunk(0, 4, { sha256: sha256(data) })), /header gave one/);
  const early = fresh(true);
  assert.throws(() => early.push(chunk(0, 4, { sha256: sha256(data) })), /only the last/);
  const missing = fresh(true);
  missing.push(chunk(0, 4));
  missing.push(chunk(4, 4));
  assert.throws(() => missing.push(chunk(8, 2)), /no sha256/);
  const wrongLength = fresh(true);
  wrongLength.push(chunk(0, 4));
  wrongLength.push(chunk(4, 4));
  assert.throws(() => wrongLength.push(chunk(8, 2, { sha256: new Uint8Array(31) })), /not 32/);
  assert.throws(() => fresh().push(chunk(0, 5)), InvalidArgumentError);
});

test("assembler: downloads ignore chunk digests and accept uniformly smaller chunks (§7.3.19, §7.3.29)", () => {
  const data = bytes(10);
  const asm = new ChunkAssembler({ totalBytes: 10, maxChunkBytes: 8, trailingDigest: "ignore" });
  for (const range of chunkRanges(10, 3)) {
    asm.push(makeChunk(data, range, new Uint8Array(32)));
  }
  assert.deepEqual(asm.finish(sha256(data)), data);
});
