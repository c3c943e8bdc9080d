import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeEnvelope, hasUnknownFields } from "../../src/wire/envelope.js";
import { MalformedError } from "../../src/wire/errors.js";
import { EnvelopeSchema } from "../../src/wire/proto.js";
import { WireFormatError, dropMismatchedFields, scanWireFormat } from "../../src/wire/strict.js";

const b = (...bytes: number[]): Uint8Array => Uint8Array.from(bytes);

// Each case and its outcome were checked against upb (the decoder of Python's protobuf).
test("known fields with another wire type are unknown fields, as in conforming decoders", () => {
  // request_id (field 1) as fixed64: unknown; no body.
  const a = decodeEnvelope(b(0x09, 1, 2, 3, 4, 5, 6, 7, 8));
  assert.equal(a.requestId, 0n);
  assert.equal(a.body.case, undefined);
  assert.ok(hasUnknownFields(a));
  // request_id as fixed32, then an empty ping.
  const c = decodeEnvelope(b(0x0d, 1, 2, 3, 4, 0x62, 0x00));
  assert.equal(c.body.case, "ping");
  assert.equal(c.requestId, 0n);
  // ping { payload (bytes) as varint }: the ping stays, its payload is empty.
  const d = decodeEnvelope(b(0x62, 0x02, 0x08, 0x01));
  assert.equal(d.body.case, "ping");
  assert.equal((d.body.value as { payload: Uint8Array }).payload.length, 0);
  // request_id as a group: unknown.
  const e = decodeEnvelope(b(0x0b, 0x0c));
  assert.equal(e.body.case, undefined);
  assert.ok(hasUnknownFields(e));
  // The frame the suite found: request_id as fixed64 eats the ping, and the rest is truncated.
  assert.throws(() => decodeEnvelope(Uint8Array.from(Buffer.from("\t\xe9\x07b\t\n\x07payload", "latin1"))), MalformedError);
});

test("what conforming decoders reject is MALFORMED", () => {
  for (const frame of [
    b(0x62, 0x03, 0x0a, 0x05, 0x61, 0x62), // a field overrunning its message
    b(0x0c), // end group without start
    b(0x62, 0x01, 0x0c),
    b(0x00, 0x01), // field number 0
    b(0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), // 11-byte varint
    b(0x0f), // wire type 7
    b(0x0b), // unterminated group
  ]) {
    assert.throws(() => decodeEnvelope(frame), MalformedError, Buffer.from(frame).toString("hex"));
    assert.throws(() => scanWireFormat(frame, EnvelopeSchema), WireFormatError);
  }
});

test("10-byte varints are accepted and truncated to 64 bits", () => {
  const env = decodeEnvelope(b(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f));
  assert.equal(env.requestId, (1n << 64n) - 1n);
});

test("dropping mismatched fields rewrites the enclosing lengths", () => {
  const frame = b(0x08, 0x05, 0x62, 0x04, 0x08, 0x01, 0x0a, 0x00);
  const scan = scanWireFormat(frame, EnvelopeSchema);
  assert.ok(scan.mismatched);
  assert.equal(scan.topLevelUnknown, 0);
  assert.deepEqual(dropMismatchedFields(frame, EnvelopeSchema), b(0x08, 0x05, 0x62, 0x02, 0x0a, 0x00));
  const env = decodeEnvelope(frame);
  assert.equal(env.requestId, 5n);
  assert.equal(env.body.case, "ping");
  assert.equal(hasUnknownFields(env), false);
});
