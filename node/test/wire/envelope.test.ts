import { test } from "node:test";
import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  REQUEST_KINDS,
  SERVER_ONLY_BODIES,
  bodyName,
  callArgsSize,
  chunkEnvelopeSize,
  decodeEnvelope,
  encodeEnvelope,
  hasUnknownFields,
  makeEnvelope,
  maxChunkDataBytes,
  varintSize,
} from "../../src/wire/envelope.js";
import { MalformedError } from "../../src/wire/errors.js";
import { CallRequestSchema, ChunkSchema, EnvelopeSchema, PingSchema } from "../../src/wire/proto.js";
import { valueToProto } from "../../src/wire/values.js";

test("an envelope round-trips through one frame", () => {
  const env = makeEnvelope(7n, { case: "ping", value: create(PingSchema, { payload: Uint8Array.from([1, 2]) }) }, 50n);
  const back = decodeEnvelope(encodeEnvelope(env));
  assert.equal(back.requestId, 7n);
  assert.equal(back.deadlineMs, 50n);
  assert.equal(back.body.case, "ping");
  assert.deepEqual((back.body.value as { payload: Uint8Array }).payload, Uint8Array.from([1, 2]));
  assert.equal(hasUnknownFields(back), false);
});

test("garbage and invalid UTF-8 are MALFORMED (§3.3.4)", () => {
  assert.throws(() => decodeEnvelope(Uint8Array.from([0xff, 0xff, 0xff])), MalformedError);
  // Envelope.hello (field 10) { client_name (field 2) = 0xff }
  assert.throws(() => decodeEnvelope(Uint8Array.from([0x52, 0x03, 0x12, 0x01, 0xff])), MalformedError);
});

test("an unknown body decodes as no body with unknown fields (§3.6.1)", () => {
  // field 99, length-delimited, empty
  const env = decodeEnvelope(Uint8Array.from([0x08, 0x05, 0x9a, 0x06, 0x00]));
  assert.equal(env.body.case, undefined);
  assert.equal(env.requestId, 5n);
  assert.equal(hasUnknownFields(env), true);
});

test("tables of §19: requests, replies and server-only bodies", () => {
  assert.equal(REQUEST_KINDS.size, 18);
  assert.equal(REQUEST_KINDS.get("fit")?.capability, "training");
  for (const body of ["welcome", "pong", "notification", "error", "fitProgress", "sendObjectReply", "listModelsReply"] as const) {
    assert.ok(SERVER_ONLY_BODIES.has(body), body);
  }
  assert.ok(!SERVER_ONLY_BODIES.has("chunk"));
  assert.ok(!SERVER_ONLY_BODIES.has("goodbye"));
  assert.equal(bodyName("sendObjectReply"), "send_object_reply");
});

test("chunk envelope sizes match the real encoding", () => {
  for (const [rid, offset, n, total] of [
    [1n, 0, 1, 1],
    [300n, 1000, 200, 5000],
    [(1n << 64n) - 1n, 262144, 262144, 1 << 24],
  ] as const) {
    const env = makeEnvelope(rid, {
      case: "chunk",
      value: create(ChunkSchema, { offset: BigInt(offset), data: new Uint8Array(n), totalBytes: BigInt(total) }),
    });
    assert.equal(chunkEnvelopeSize(rid, offset, n, total), toBinary(EnvelopeSchema, env).length);
  }
  const n = maxChunkDataBytes(1000, 4096, 12n, 100000);
  assert.ok(chunkEnvelopeSize(12n, 100000, n, 100000) <= 1000);
  assert.ok(chunkEnvelopeSize(12n, 100000, n + 1, 100000) > 1000);
  assert.equal(maxChunkDataBytes(5, 4096, 12n, 100000), 0);
  assert.equal(varintSize(127), 1);
  assert.equal(varintSize(128), 2);
});

test("call argument size is the CallRequest without its method (§11.3.1)", () => {
  const call = create(CallRequestSchema, { method: "a-long-method-name", args: [valueToProto("x")] });
  const bare = create(CallRequestSchema, { args: call.args });
  assert.equal(callArgsSize(call), toBinary(CallRequestSchema, bare).length);
});
