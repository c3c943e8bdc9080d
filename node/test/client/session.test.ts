/**
 * The client session without sockets: frames in, frames and events out, each request settled exactly
 * once. A tiny scripted server is written here from the spec with the wire layer.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  ClientSession,
  ConnectionClosedError,
  type Outcome,
  type SessionEvent,
} from "../../src/client/index.js";
import {
  CancelledError,
  DataLossError,
  DeadlineExceededError,
  FedprotoError,
  HostTensor,
  InternalError,
  InvalidArgumentError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  chunkEnvelopeSize,
  decodeEnvelope,
  encodeEnvelope,
  errorToProto,
  makeEnvelope,
  proto,
  sha256,
  valueToProto,
  type Body,
} from "../../src/wire/index.js";

const DT = proto.DType;

interface LimitsInit {
  maxFrameBytes?: bigint;
  maxInFlight?: number;
  chunkBytes?: bigint;
}

function welcome(limits: LimitsInit = {}, capabilities = ["objects", "chunked", "calls", "notifications"], version = 1): Uint8Array {
  const value = create(proto.WelcomeSchema, {
    version,
    serverId: "test",
    serverName: "scripted",
    capabilities,
    identity: "anonymous",
    limits: create(proto.LimitsSchema, {
      maxFrameBytes: limits.maxFrameBytes ?? 4096n,
      maxInFlight: limits.maxInFlight ?? 8,
      chunkBytes: limits.chunkBytes ?? 1024n,
    }),
  });
  return encodeEnvelope(makeEnvelope(1n, { case: "welcome", value }));
}

const frame = (id: bigint, body: Body): Uint8Array => encodeEnvelope(makeEnvelope(id, body));
const pong = (id: bigint): Uint8Array => frame(id, { case: "pong", value: create(proto.PongSchema) });
const errorFrame = (id: bigint, err: FedprotoError): Uint8Array => frame(id, { case: "error", value: errorToProto(err) });
const ping: Body = { case: "ping", value: create(proto.PingSchema) };

/** A session past its handshake, with a recorder of outcomes. */
function openSession(limits: LimitsInit = {}, capabilities?: string[]): ClientSession {
  const session = new ClientSession();
  session.hello({ clientName: "test" });
  session.takeFrames();
  session.receive(welcome(limits, capabilities));
  assert.equal(session.state, "open");
  session.takeEvents();
  return session;
}

class Recorder {
  readonly outcomes: Outcome[] = [];
  readonly callbacks = { settle: (o: Outcome): void => void this.outcomes.push(o) };
  get last(): Outcome {
    assert.equal(this.outcomes.length, 1, "settled exactly once");
    return this.outcomes[0]!;
  }
}

const sent = (session: ClientSession): proto.Envelope[] => session.takeFrames().map((f) => decodeEnvelope(f));

test("the Hello offers version 1 with id 1; a Welcome opens the session (§4.1)", () => {
  const session = new ClientSession();
  session.hello({ token: "tok", clientName: "me", maxFrameBytes: 4096 });
  const [hello] = sent(session);
  assert.equal(hello!.requestId, 1n);
  assert.equal(hello!.body.case, "hello");
  const value = hello!.body.value as proto.Hello;
  assert.deepEqual(value.versions, [1]);
  assert.equal(value.token, "tok");
  assert.equal(value.maxFrameBytes, 4096n);
  session.receive(welcome({ maxInFlight: 3 }));
  const events = session.takeEvents();
  assert.equal(events[0]!.type, "welcome");
  assert.equal(session.server!.limits.maxInFlight, 3);
  assert.ok(session.server!.capabilities.has("chunked"));
});

test("a frame limit below 1024 is refused before anything is sent (§4.6.3)", () => {
  for (const bad of [1, 1023, -1, 1.5]) {
    assert.throws(() => new ClientSession().hello({ maxFrameBytes: bad }), InvalidArgumentError);
  }
  new ClientSession().hello({ maxFrameBytes: 1024 });
  new ClientSession().hello({ maxFrameBytes: 0 });
});

test("a refused Hello fails the handshake with the typed error of its code (§4.1.8)", () => {
  const session = new ClientSession();
  session.hello();
  session.receive(errorFrame(1n, new UnauthenticatedError("no")));
  const [event] = session.takeEvents();
  assert.equal(event!.type, "handshakeFailed");
  assert.ok((event as Extract<SessionEvent, { type: "handshakeFailed" }>).error instanceof UnauthenticatedError);
});

test("a Welcome with a version not offered, or without limits, is a protocol error (§4.1.8)", () => {
  for (const bad of [welcome({}, [], 2), encodeEnvelope(makeEnvelope(1n, { case: "welcome", value: create(proto.WelcomeSchema, { version: 1 }) }))]) {
    const session = new ClientSession();
    session.hello();
    session.receive(bad);
    const types = session.takeEvents().map((e) => e.type);
    assert.deepEqual(types, ["protocolViolation", "handshakeFailed"]);
    assert.notEqual(session.state, "open");
  }
});

test("requests beyond max_in_flight wait in the client; replies match by id in any order (§5.4.3, §5.5.7)", () => {
  const session = openSession({ maxInFlight: 2 });
  const recs = [new Recorder(), new Recorder(), new Recorder(), new Recorder()];
  const ids = recs.map((r) => session.submit(ping, r.callbacks));
  assert.equal(new Set(ids).size, 4);
  assert.deepEqual(ids, [2n, 3n, 4n, 5n]); // §5.1.7: counting up after the Hello's 1
  assert.deepEqual(sent(session).map((e) => e.requestId), [2n, 3n]);
  assert.equal(session.inFlight, 2);
  assert.equal(session.queued, 2);
  session.receive(pong(3n));
  assert.equal(recs[1]!.last.ok, true);
  assert.equal(recs[0]!.outcomes.length, 0);
  assert.deepEqual(sent(session).map((e) => e.requestId), [4n]);
  session.receive(pong(2n));
  session.receive(pong(4n));
  assert.deepEqual(sent(session).map((e) => e.requestId), [5n]);
  session.receive(pong(5n));
  assert.ok(recs.every((r) => r.last.ok));
  assert.equal(session.inFlight, 0);
});

test("the wrong reply body fails the request with INTERNAL and frees its place (§5.3.7)", () => {
  const session = openSession();
  const rec = new Recorder();
  const id = session.submit(ping, rec.callbacks);
  session.receive(frame(id, { case: "countObjectsReply", value: create(proto.CountObjectsReplySchema) }));
  const outcome = rec.last;
  assert.ok(!outcome.ok && outcome.error instanceof InternalError);
  assert.equal(session.inFlight, 0);
});

test("an unknown body with a request's id is ignored, never terminal (§3.6.5)", () => {
  const session = openSession();
  const rec = new Recorder();
  const id = session.submit(ping, rec.callbacks);
  // Envelope { request_id = id, field 99 = {} }: a body from a newer version.
  session.receive(Uint8Array.from([0x08, Number(id), 0x9a, 0x06, 0x00]));
  assert.equal(rec.outcomes.length, 0);
  assert.equal(session.inFlight, 1);
  session.receive(pong(id));
  assert.ok(rec.last.ok);
});

test("cancel settles at once, sends Cancel, and keeps the id until the terminal reply (§6.2.10)", () => {
  const session = openSession({ maxInFlight: 1 });
  const a = new Recorder();
  const b = new Recorder();
  const first = session.submit(ping, a.callbacks);
  const second = session.submit(ping, b.callbacks);
  sent(session);
  session.cancel(first, new CancelledError("stop"));
  assert.ok(!a.last.ok && a.last.error instanceof CancelledError);
  const [cancel] = sent(session);
  assert.equal(cancel!.body.case, "cancel");
  assert.equal(cancel!.requestId, first);
  assert.equal(session.inFlight, 1, "the cancelled request still holds its place");
  assert.equal(session.queued, 1);
  session.receive(errorFrame(first, new CancelledError("cancelled")));
  assert.equal(a.outcomes.length, 1, "the server's CANCELLED is not reported twice");
  assert.deepEqual(sent(session).map((e) => e.requestId), [second]);
});

test("cancelling a held-back request sends nothing (§6.2.10)", () => {
  const session = openSession({ maxInFlight: 1 });
  const a = new Recorder();
  const b = new Recorder();
  session.submit(ping, a.callbacks);
  const held = session.submit(ping, b.callbacks);
  sent(session);
  session.cancel(held, new CancelledError("stop"));
  assert.ok(!b.last.ok);
  assert.equal(sent(session).length, 0);
  assert.equal(session.queued, 0);
});

test("a connection-level Error naming a request does not fail it (§5.2, §3.7.3)", () => {
  const session = openSession();
  const rec = new Recorder();
  const id = session.submit(ping, rec.callbacks);
  session.receive(errorFrame(0n, new InternalError("duplicate", { details: { request_id: String(id) } })));
  const events = session.takeEvents();
  assert.equal(events[0]!.type, "connectionError");
  assert.equal(rec.outcomes.length, 0);
  session.receive(pong(id));
  assert.ok(rec.last.ok);
});

test("notifications become events; an invalid one is dropped (§6.4.7)", () => {
  const session = openSession();
  const payload = valueToProto(new Map([["n", 1n]]));
  session.receive(frame(0n, { case: "notification", value: create(proto.NotificationSchema, { topic: "t", payload }) }));
  session.receive(frame(0n, { case: "notification", value: create(proto.NotificationSchema, { topic: "bad" }) }));
  const events = session.takeEvents();
  assert.equal(events.length, 2);
  assert.equal(events[0]!.type, "notification");
  const note = events[0] as Extract<SessionEvent, { type: "notification" }>;
  assert.equal(note.topic, "t");
  assert.deepEqual(note.payload, new Map([["n", 1n]]));
  assert.equal(events[1]!.type, "connectionError");
});

test("an undecodable frame from the server is a protocol error (§3.3.6)", () => {
  const session = openSession();
  session.receive(Uint8Array.from([0xff, 0xff, 0xff]));
  const [event] = session.takeEvents();
  assert.deepEqual({ type: event!.type, code: (event as { closeCode: number }).closeCode }, { type: "protocolViolation", code: 1002 });
});

test("a request bigger than max_frame_bytes is refused before it is sent (§14.2.7)", () => {
  const session = openSession({ maxFrameBytes: 200n });
  const call = create(proto.CallRequestSchema, { method: "echo", args: [valueToProto("x".repeat(500))] });
  assert.throws(() => session.submit({ case: "call", value: call }, new Recorder().callbacks), ResourceExhaustedError);
  assert.equal(sent(session).length, 0);
});

test("a held-back request whose deadline passed in line is not sent (§5.6.10)", () => {
  const session = openSession({ maxInFlight: 1 });
  const first = session.submit(ping, new Recorder().callbacks);
  const late = new Recorder();
  const soon = Date.now() + 5;
  session.submit(ping, late.callbacks, { deadlineAt: soon, now: soon - 5 });
  assert.ok(session.isHeldBack(first + 1n));
  sent(session);
  while (Date.now() <= soon) {
    // let the deadline pass
  }
  session.receive(pong(first));
  assert.ok(!late.last.ok && late.last.error instanceof DeadlineExceededError);
  assert.equal(sent(session).length, 0, "nothing sent for it");
  assert.equal(session.inFlight, 0);
});

test("a deadline goes out as what remains of it (§5.6.8)", () => {
  const session = openSession();
  session.submit(ping, new Recorder().callbacks, { deadlineAt: 10_500, now: 10_000 });
  const [env] = sent(session);
  assert.equal(env!.deadlineMs, 500n);
});

function tensorOf(n: number): HostTensor {
  const data = Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
  return HostTensor.create(DT.DTYPE_UINT8, [data.length], data);
}

test("a tensor over one chunk goes in chunk_bytes chunks with the digest in the last (§7.3.5, §7.3.26)", () => {
  const session = openSession({ chunkBytes: 16n, maxFrameBytes: 16n + 64n });
  const tensor = tensorOf(40);
  const rec = new Recorder();
  const id = session.submitSendObject(tensor, { id: "t" }, rec.callbacks);
  const [header] = sent(session);
  const request = header!.body.value as proto.SendObjectRequest;
  assert.equal(request.payload.case, "chunked");
  const info = request.payload.value as proto.TensorInfo;
  assert.equal(info.nbytes, 40n);
  assert.equal(info.sha256.length, 0, "the digest trails");
  const chunks: proto.Chunk[] = [];
  for (let next = session.nextUploadChunk(); next !== undefined; next = session.nextUploadChunk()) {
    assert.ok(next.length <= 16 + 64);
    const env = decodeEnvelope(next);
    assert.equal(env.requestId, id);
    chunks.push(env.body.value as proto.Chunk);
  }
  assert.deepEqual(chunks.map((c) => [Number(c.offset), c.data.length, Number(c.totalBytes)]), [[0, 16, 40], [16, 16, 40], [32, 8, 40]]);
  assert.deepEqual(chunks.map((c) => c.sha256.length), [0, 0, 32]);
  assert.deepEqual(chunks[2]!.sha256, sha256(tensor.data));
  assert.deepEqual(Buffer.concat(chunks.map((c) => c.data)), Buffer.from(tensor.data));
});

test("without room for a trailing digest, the digest goes in the header (§7.3.30)", () => {
  const id = 2n;
  const limit = chunkEnvelopeSize(id, 200, 200, 400) + 10; // a full last chunk fits, its digest does not
  const session = openSession({ chunkBytes: 200n, maxFrameBytes: BigInt(limit) });
  const tensor = tensorOf(400);
  assert.equal(session.submitSendObject(tensor, {}, new Recorder().callbacks), id);
  const info = (sent(session)[0]!.body.value as proto.SendObjectRequest).payload.value as proto.TensorInfo;
  assert.deepEqual(info.sha256, sha256(tensor.data));
  const digests: number[] = [];
  for (let next = session.nextUploadChunk(); next !== undefined; next = session.nextUploadChunk()) {
    assert.ok(next.length <= limit);
    digests.push((decodeEnvelope(next).body.value as proto.Chunk).sha256.length);
  }
  assert.deepEqual(digests, [0, 0]);
});

test("an upload whose reply comes early sends no more chunks (§7.3.31)", () => {
  const session = openSession({ chunkBytes: 16n, maxFrameBytes: 80n });
  const rec = new Recorder();
  const id = session.submitSendObject(tensorOf(64), { id: "t" }, rec.callbacks);
  sent(session);
  assert.ok(session.nextUploadChunk() !== undefined);
  session.receive(errorFrame(id, new ResourceExhaustedError("quota")));
  assert.ok(!rec.last.ok && rec.last.error instanceof ResourceExhaustedError);
  assert.equal(session.nextUploadChunk(), undefined);
});

function download(session: ClientSession, id: bigint, data: Uint8Array, chunk: number, digest = sha256(data)): void {
  for (let offset = 0; offset < data.length; offset += chunk) {
    const piece = data.subarray(offset, Math.min(data.length, offset + chunk));
    session.receive(
      frame(id, {
        case: "chunk",
        value: create(proto.ChunkSchema, { offset: BigInt(offset), data: piece, totalBytes: BigInt(data.length) }),
      }),
    );
  }
  const info = create(proto.ObjectInfoSchema, {
    id: "t",
    tensor: create(proto.TensorInfoSchema, { dtype: DT.DTYPE_UINT8, shape: [BigInt(data.length)], nbytes: BigInt(data.length), sha256: digest }),
  });
  session.receive(frame(id, { case: "getObjectReply", value: create(proto.GetObjectReplySchema, { info }) }));
}

const getBody = (id: string): Body => ({ case: "getObject", value: create(proto.GetObjectRequestSchema, { id }) });

test("a chunked download is assembled and verified (§7.3.22)", () => {
  const session = openSession({ chunkBytes: 16n });
  const data = tensorOf(50).data;
  const rec = new Recorder();
  const id = session.submit(getBody("t"), rec.callbacks);
  download(session, id, data, 16);
  const outcome = rec.last;
  assert.ok(outcome.ok);
  assert.deepEqual(outcome.tensor!.data, data);
  assert.deepEqual(outcome.tensor!.shape, [50]);
  // §7.3.33: smaller chunks of one size (a server fitting the client's frame limit) are fine too.
  const again = new Recorder();
  download(session, session.submit(getBody("t"), again.callbacks), data, 10);
  assert.ok(again.last.ok);
});

test("a download whose digest does not match is DATA_LOSS (§7.3.22)", () => {
  const session = openSession({ chunkBytes: 16n });
  const rec = new Recorder();
  download(session, session.submit(getBody("t"), rec.callbacks), tensorOf(40).data, 16, new Uint8Array(32));
  assert.ok(!rec.last.ok && rec.last.error instanceof DataLossError);
});

test("a chunk out of order fails the download with DATA_LOSS and cancels it (§7.3.33)", () => {
  const session = openSession({ chunkBytes: 16n });
  const rec = new Recorder();
  const id = session.submit(getBody("t"), rec.callbacks);
  sent(session);
  const bad = create(proto.ChunkSchema, { offset: 16n, data: new Uint8Array(16), totalBytes: 48n });
  session.receive(frame(id, { case: "chunk", value: bad }));
  assert.ok(!rec.last.ok && rec.last.error instanceof DataLossError);
  assert.deepEqual(sent(session).map((e) => e.body.case), ["cancel"]);
  assert.equal(session.inFlight, 1);
});

test("an inline download is checked against its digest (§7.3.34)", () => {
  const session = openSession();
  const data = tensorOf(8).data;
  for (const [digest, ok] of [[sha256(data), true], [new Uint8Array(32), false]] as const) {
    const rec = new Recorder();
    const id = session.submit(getBody("t"), rec.callbacks);
    const info = create(proto.ObjectInfoSchema, {
      id: "t",
      tensor: create(proto.TensorInfoSchema, { dtype: DT.DTYPE_UINT8, shape: [8n], nbytes: 8n, sha256: digest }),
    });
    const tensor = create(proto.TensorSchema, { dtype: DT.DTYPE_UINT8, shape: [8n], data });
    session.receive(frame(id, { case: "getObjectReply", value: create(proto.GetObjectReplySchema, { info, tensor }) }));
    assert.equal(rec.last.ok, ok);
  }
});

test("the server's goodbye fails held-back requests and refuses new ones (§6.3.7, §6.3.8)", () => {
  const session = openSession({ maxInFlight: 1 });
  const a = new Recorder();
  const b = new Recorder();
  const first = session.submit(ping, a.callbacks);
  session.submit(ping, b.callbacks);
  session.receive(frame(0n, { case: "goodbye", value: create(proto.GoodbyeSchema, { reason: "shutdown" }) }));
  assert.equal(session.takeEvents()[0]!.type, "goodbye");
  assert.ok(!b.last.ok && b.last.error instanceof UnavailableError);
  assert.throws(() => session.submit(ping, new Recorder().callbacks), UnavailableError);
  session.receive(pong(first));
  assert.ok(a.last.ok, "requests in flight may still finish");
});

test("after its own goodbye the client sends nothing more (§6.3.8)", () => {
  const session = openSession({ maxInFlight: 1 });
  const a = new Recorder();
  const b = new Recorder();
  const first = session.submit(ping, a.callbacks);
  session.submit(ping, b.callbacks);
  sent(session);
  session.goodbye("done");
  assert.deepEqual(sent(session).map((e) => [e.body.case, e.requestId]), [["goodbye", 0n]]);
  assert.ok(!b.last.ok && b.last.error instanceof CancelledError);
  session.cancel(first, new CancelledError("late"));
  assert.equal(sent(session).length, 0);
});

test("a lost connection fails every request with UNAVAILABLE (§5.3.8)", () => {
  const session = openSession({ maxInFlight: 1 });
  const a = new Recorder();
  const b = new Recorder();
  session.submit(ping, a.callbacks);
  session.submit(ping, b.callbacks);
  session.connectionLost(1006);
  for (const rec of [a, b]) {
    const outcome = rec.last;
    assert.ok(!outcome.ok && outcome.error instanceof ConnectionClosedError);
    assert.equal(outcome.error.codeName, "UNAVAILABLE");
  }
  assert.equal(session.state, "closed");
  assert.throws(() => session.submit(ping, new Recorder().callbacks), ConnectionClosedError);
});

test("the Hello offers digests fastest first; a Welcome choosing one not offered fails the handshake (§7.5.3, §7.5.5)", () => {
  const offered = new ClientSession();
  offered.hello({ digests: ["sha256"] });
  const hello = decodeEnvelope(offered.takeFrames()[0]!);
  assert.deepEqual(hello.body.case === "hello" ? hello.body.value.digests : undefined, ["sha256"]);
  const fresh = new ClientSession();
  fresh.hello();
  const first = decodeEnvelope(fresh.takeFrames()[0]!);
  assert.deepEqual(first.body.case === "hello" ? first.body.value.digests : undefined, ["xxh3-128", "sha256"]);
  const choose = (digest: string): string[] => {
    const session = new ClientSession();
    session.hello({ digests: ["sha256"] });
    const env = decodeEnvelope(welcome());
    if (env.body.case === "welcome") env.body.value.digest = digest;
    session.receive(encodeEnvelope(env));
    return session.takeEvents().map((e) => e.type);
  };
  assert.deepEqual(choose(""), ["welcome"]);
  assert.deepEqual(choose("sha256"), ["welcome"]);
  assert.deepEqual(choose("xxh3-128"), ["protocolViolation", "handshakeFailed"]);
  assert.deepEqual(choose("md5"), ["protocolViolation", "handshakeFailed"]);
});
