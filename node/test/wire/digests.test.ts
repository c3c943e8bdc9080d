/** Digests of §7.5: known answers, the server's choice, which field carries a digest, the hashers. */
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  PREFERRED_DIGESTS,
  SHA256,
  XXH3_128,
  carriedDigest,
  chooseDigest,
  createPayloadHasher,
  digestFields,
  digestOf,
} from "../../src/wire/digests.js";
import { ChunkAssembler, chunkRanges, makeChunk } from "../../src/wire/tensors.js";
import { DataLossError, InvalidArgumentError } from "../../src/wire/errors.js";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 13 + 5) & 0xff);

test("the empty payload's digests are those of §7.5.9; XXH3-128 is big-endian", () => {
  assert.equal(hex(digestOf(SHA256, new Uint8Array(0))), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(hex(digestOf(XXH3_128, new Uint8Array(0))), "99aa06d3014798d86001c324468d497f");
  // XXH3-128("abc") from the reference implementation (canonical form; its high byte is 0x06)
  assert.equal(hex(digestOf(XXH3_128, Buffer.from("abc"))), "06b05ab6733a618578af5f94892f3950");
  assert.throws(() => digestOf("md5", new Uint8Array(0)), RangeError);
});

test("the server takes the first offered algorithm it computes, else sha256 (§7.5.4)", () => {
  assert.equal(chooseDigest([]), SHA256);
  assert.equal(chooseDigest(["md5", "crc32c"]), SHA256);
  assert.equal(chooseDigest(["blake3", XXH3_128, SHA256]), XXH3_128);
  assert.deepEqual([...PREFERRED_DIGESTS].at(-1), SHA256);
});

test("the digest travels in sha256 under SHA-256 and in digest otherwise (§7.5.7, §7.5.8)", () => {
  const d = new Uint8Array([1, 2]);
  assert.deepEqual(digestFields(SHA256, d), { sha256: d, digest: new Uint8Array(0) });
  assert.deepEqual(digestFields(XXH3_128, d), { sha256: new Uint8Array(0), digest: d });
  assert.equal(carriedDigest(digestFields(XXH3_128, d), XXH3_128), d);
});

test("a hasher fed piece by piece gives the one-pass digest", () => {
  const data = bytes(10_000);
  for (const name of [SHA256, XXH3_128]) {
    const hasher = createPayloadHasher(name);
    for (const range of chunkRanges(data.length, 999)) hasher.update(data.subarray(range.offset, range.offset + range.length));
    assert.deepEqual(hasher.finish(data), digestOf(name, data));
  }
});

test("an upload under xxh3-128: trailer in Chunk.digest, sha256 refused, a wrong digest is DATA_LOSS", () => {
  const data = bytes(3000);
  const assembler = (): ChunkAssembler =>
    new ChunkAssembler({ totalBytes: data.length, maxChunkBytes: 1024, trailingDigest: true, algorithm: XXH3_128 });
  const ranges = [...chunkRanges(data.length, 1024)];
  const good = assembler();
  ranges.forEach((r, i) => good.push(makeChunk(data, r, i === ranges.length - 1 ? digestOf(XXH3_128, data) : undefined, XXH3_128)));
  assert.deepEqual(good.finish(), data);
  assert.deepEqual(good.verified, digestOf(XXH3_128, data));
  const wrongField = assembler();
  wrongField.push(makeChunk(data, ranges[0]!, undefined, XXH3_128));
  wrongField.push(makeChunk(data, ranges[1]!, undefined, XXH3_128));
  assert.throws(() => wrongField.push(makeChunk(data, ranges[2]!, digestOf(SHA256, data), SHA256)), InvalidArgumentError);
  const wrongLength = assembler();
  wrongLength.push(makeChunk(data, ranges[0]!, undefined, XXH3_128));
  wrongLength.push(makeChunk(data, ranges[1]!, undefined, XXH3_128));
  assert.throws(() => wrongLength.push(makeChunk(data, ranges[2]!, new Uint8Array(32), XXH3_128)), /not 16/);
  const mismatch = assembler();
  ranges.forEach((r, i) => mismatch.push(makeChunk(data, r, i === ranges.length - 1 ? new Uint8Array(16) : undefined, XXH3_128)));
  assert.throws(() => mismatch.finish(), DataLossError);
});
