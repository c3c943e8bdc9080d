import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { CancelSchema, ErrorCode, GoodbyeSchema, ListModelsRequestSchema, PingSchema, PongSchema, WelcomeSchema } from "../../src/wire/proto.js";
import { CONFORMANCE_LIMITS } from "../../src/wire/limits.js";
import { CancelledError, NotFoundError } from "../../src/wire/errors.js";
import { CloseCode, ServerSession, TokenTable, type RequestContext, type RequestFailure, type SessionConfig } from "../../src/worker/session.js";
import type { Body } from "../../src/wire/envelope.js";
import { Peer, tick } from "./helpers.js";

/** A session whose requests wait until the test settles them through `pending`. */
function open(options: Partial<SessionConfig> = {}): { peer: Peer; pending: Map<bigint, { ctx: RequestContext; resolve: (b: Body) => void; reject: (e: unknown) => void }> } {
  const peer = new Peer();
  const pending = new Map();
  const config: SessionConfig = {
    serverId: "test",
    serverName: "test-server",
    capabilities: ["objects", "calls", "deadlines", "notifications"],
    limits: { ...CONFORMANCE_LIMITS, maxInFlight: 2, handshakeTimeoutSeconds: 0, idleTimeoutSeconds: 0 },
    tokens: new TokenTable(new Map()),
    ...options,
  };
  peer.session = new ServerSession(
    config,
    (ctx) => {
      if (ctx.body.case === "ping") {
        return Promise.resolve({ case: "pong", value: create(PongSchema, { payload: ctx.body.value.payload }) } as Body);
      }
      return new Promise((resolve, reject) => pending.set(ctx.requestId, { ctx, resolve, reject }));
    },
    peer,
  );
  return { peer, pending };
}

const ping = (payload = new Uint8Array(0)): Body => ({ case: "ping", value: create(PingSchema, { payload }) });
const slow = (): Body => ({ case: "countObjects", value: { $typeName: "fedproto.v1.CountObjectsRequest" } });

test("handshake: welcome with version, limits and identity (§4.1.3, §4.6.1)", () => {
  const { peer } = open();
  const welcome = peer.hello({ versions: [2, 1] });
  assert.equal(welcome.body.case, "welcome");
  const w = welcome.body.value as ReturnType<typeof create<typeof WelcomeSchema>>;
  assert.equal(w.version, 1);
  assert.equal(w.identity, "anonymous");
  assert.equal(w.limits?.maxInFlight, 2);
  assert.equal(peer.session.currentState, "open");
});

test("handshake failures close with the right code (§4.1.4, §4.2.3-5, §4.4.1-2, §15.1.3-4)", () => {
  let s = open().peer;
  s.put(3, ping());
  assert.deepEqual([s.lastError().code, s.lastError().requestId, s.closeCode()], [ErrorCode.FAILED_PRECONDITION, 3n, 1002]);
  s = open().peer;
  s.hello({}, 0n);
  assert.deepEqual([s.lastError().code, s.lastError().requestId, s.closeCode()], [ErrorCode.INVALID_ARGUMENT, 0n, 1002]);
  s = open().peer;
  s.hello({ versions: [] });
  assert.deepEqual([s.lastError().code, s.lastError().details, s.closeCode()], [ErrorCode.UNSUPPORTED_VERSION, { supported: "1" }, 1002]);
  s = open({ tokens: new TokenTable(new Map([["tok-a", "alice"]])) }).peer;
  s.hello({ token: "tok-b" });
  assert.deepEqual([s.lastError().code, s.closeCode()], [ErrorCode.UNAUTHENTICATED, 1008]);
  assert.ok(!s.lastError().message.includes("tok-a"));
  // §4.1.7: what follows a failed handshake is discarded.
  const count = s.received.length;
  s.put(2, ping());
  assert.equal(s.received.length, count);
});

test("tokens map to identities, compared on digests (§15.1.2, §15.2.1)", () => {
  const table = new TokenTable(new Map([["tok-a", "alice"], ["tok-a2", "alice"], ["tok-b", "bob"]]));
  assert.equal(table.identityOf("tok-a2"), "alice");
  assert.equal(table.identityOf("tok-b"), "bob");
  assert.equal(table.identityOf("tok-"), undefined);
  const { peer } = open({ tokens: table });
  const welcome = peer.hello({ token: "tok-b" });
  assert.equal((welcome.body.value as { identity: string }).identity, "bob");
});

test("framing: undecodable, no body, unknown body, server-only body, text (§3)", () => {
  const { peer } = open();
  peer.session.receiveBinary(Uint8Array.from([0xff, 0xff])); // before the handshake too (§3.3.5)
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.MALFORMED, 0n]);
  assert.equal(peer.closeCode(), undefined);
  peer.hello();
  peer.session.receiveBinary(Uint8Array.from([0x08, 0x07])); // request_id 7, no body
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.MALFORMED, 7n]);
  peer.session.receiveBinary(Uint8Array.from([0x08, 0x08, 0x9a, 0x06, 0x00])); // field 99
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.UNIMPLEMENTED, 8n]);
  peer.put(9, { case: "pong", value: create(PongSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 9n]);
  peer.session.receiveText();
  assert.equal(peer.closeCode(), CloseCode.UNSUPPORTED_DATA);
});

test("a rejected envelope naming a request in flight gets request_id 0 (§3.7.3)", () => {
  const { peer } = open();
  peer.hello();
  peer.put(5, slow());
  peer.put(5, { case: "pong", value: create(PongSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId, peer.lastError().details], [ErrorCode.INVALID_ARGUMENT, 0n, { request_id: "5" }]);
});

test("request ids: 0, duplicates, in-flight limit, capability (§5.1.5, §5.2, §5.5, §3.6.3)", async () => {
  const { peer, pending } = open();
  peer.hello();
  peer.put(0, ping());
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 0n]);
  peer.put(10, slow());
  peer.put(10, slow());
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId, peer.lastError().details], [ErrorCode.INVALID_ARGUMENT, 0n, { request_id: "10" }]);
  peer.put(11, slow());
  peer.put(12, slow());
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId, peer.lastError().details], [ErrorCode.RESOURCE_EXHAUSTED, 12n, { limit: "2" }]);
  assert.equal(peer.session.inFlightCount, 2);
  pending.get(10n)!.resolve({ case: "countObjectsReply", value: { $typeName: "fedproto.v1.CountObjectsReply", count: 0n } });
  await tick();
  assert.equal(peer.withId(10).at(-1)?.body.case, "countObjectsReply");
  peer.put(13, { case: "listModels", value: create(ListModelsRequestSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.UNIMPLEMENTED, 13n]);
  // Second hello: id 0 and duplicates first (§4.4.5), then FAILED_PRECONDITION (§4.4.4).
  peer.hello({}, 0n);
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 0n]);
  peer.hello({}, 11n);
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 0n]);
  peer.hello({}, 14n);
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.FAILED_PRECONDITION, 14n]);
  assert.equal(peer.closeCode(), undefined);
});

test("cancel ends a request once with CANCELLED and aborts its signal (§6.2)", async () => {
  const { peer, pending } = open();
  peer.hello();
  peer.put(20, slow());
  const { ctx, resolve } = pending.get(20n)!;
  peer.put(20, { case: "cancel", value: create(CancelSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.CANCELLED, 20n]);
  assert.ok(ctx.signal.aborted);
  assert.ok(ctx.signal.reason instanceof CancelledError);
  resolve({ case: "countObjectsReply", value: { $typeName: "fedproto.v1.CountObjectsReply", count: 0n } });
  await tick();
  assert.equal(peer.withId(20).length, 1);
  const before = peer.received.length;
  peer.put(20, { case: "cancel", value: create(CancelSchema) }); // §6.2.6: nothing in flight, ignored
  peer.put(0, { case: "cancel", value: create(CancelSchema) });
  assert.equal(peer.received.length, before);
});

test("a handler's error is the terminal reply; a deadline ends the request (§5.6.2)", async () => {
  const { peer, pending } = open();
  peer.hello();
  peer.put(30, slow());
  pending.get(30n)!.reject(new NotFoundError("nope", { details: { id: "x" } }));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId, peer.lastError().details], [ErrorCode.NOT_FOUND, 30n, { id: "x" }]);
  peer.put(31, slow(), 30n);
  await tick(80);
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.DEADLINE_EXCEEDED, 31n]);
  assert.ok(pending.get(31n)!.ctx.signal.aborted);
});

test("an unanticipated failure is a generic INTERNAL with an error id the log gets too (§13.1.7)", async () => {
  const failures: RequestFailure[] = [];
  const { peer, pending } = open({ onFailure: (f) => failures.push(f) });
  peer.hello();
  peer.put(32, slow());
  pending.get(32n)!.reject(new TypeError("cannot read /srv/secret/config.json"));
  await tick();
  const error = peer.lastError();
  assert.deepEqual([error.code, error.requestId], [ErrorCode.INTERNAL, 32n]);
  assert.match(error.details.error_id!, /^[0-9a-f]{8}$/);
  assert.ok(!error.message.includes("secret") && !error.message.includes("TypeError"), error.message);
  assert.ok(error.message.includes(`error id ${error.details.error_id}`), error.message);
  assert.equal(failures.length, 1);
  assert.deepEqual([failures[0]!.errorId, failures[0]!.kind, failures[0]!.identity], [error.details.error_id, "count_objects", "anonymous"]);
  assert.ok(failures[0]!.error instanceof TypeError);
  // A protocol error is meant for the client: sent as raised, not logged (§11.4.1).
  peer.put(33, slow());
  pending.get(33n)!.reject(new NotFoundError("no such thing"));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().message], [ErrorCode.NOT_FOUND, "no such thing"]);
  assert.equal(failures.length, 1);
});

test("with exposeErrors the failure's own text goes out, beside the error id (§13.1.7)", async () => {
  const { peer, pending } = open({ exposeErrors: true, onFailure: () => undefined });
  peer.hello();
  peer.put(34, slow());
  pending.get(34n)!.reject(new TypeError("cannot read /srv/secret/config.json"));
  await tick();
  const error = peer.lastError();
  assert.equal(error.code, ErrorCode.INTERNAL);
  assert.ok(error.message.startsWith("TypeError: cannot read /srv/secret/config.json (error id "), error.message);
  assert.match(error.details.error_id!, /^[0-9a-f]{8}$/);
});

test("replies and errors stay within the client's frame limit, clamped at 1024 (§14.2.4, §13.1.6, §4.6.3)", async () => {
  const { peer, pending } = open();
  peer.hello({ maxFrameBytes: 100n });
  peer.put(40, ping(new Uint8Array(1000)));
  await tick();
  assert.equal(peer.withId(40).at(-1)?.body.case, "pong"); // 1000 bytes fit in the clamped 1024
  peer.put(41, ping(new Uint8Array(1100)));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId, peer.lastError().details], [ErrorCode.RESOURCE_EXHAUSTED, 41n, { limit: "1024" }]);
  peer.put(42, slow());
  pending.get(42n)!.reject(new NotFoundError("é".repeat(2000), { details: { big: "x".repeat(500) } }));
  await tick();
  const error = peer.lastError();
  assert.equal(error.code, ErrorCode.NOT_FOUND);
  assert.deepEqual(error.details, {});
  assert.ok(error.message.length > 100 && !error.message.includes("\uFFFD"));
  assert.ok(peer.frames.every((f) => f.length <= 1024));
});

test("goodbye cancels what is in flight and closes with 1000 (§6.3.2)", () => {
  const { peer } = open();
  peer.hello();
  peer.put(50, slow());
  peer.put(51, { case: "goodbye", value: create(GoodbyeSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.CANCELLED, 50n]);
  assert.equal(peer.withId(51).length, 0);
  assert.equal(peer.closeCode(), 1000);
});

test("shutdown: goodbye, UNAVAILABLE for new and unfinished requests, close 1001 (§6.3.3-6)", async () => {
  const { peer, pending } = open();
  peer.hello();
  peer.put(60, slow());
  peer.put(61, slow());
  const done = peer.session.shutdown(50);
  assert.equal(peer.received.at(-1)?.body.case, "goodbye");
  assert.equal(peer.received.at(-1)?.requestId, 0n);
  peer.put(62, slow());
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.UNAVAILABLE, 62n]);
  pending.get(60n)!.resolve({ case: "countObjectsReply", value: { $typeName: "fedproto.v1.CountObjectsReply", count: 1n } });
  await done;
  assert.equal(peer.withId(60).at(-1)?.body.case, "countObjectsReply");
  assert.equal((peer.withId(61).at(-1)?.body.value as { code: number }).code, ErrorCode.UNAVAILABLE);
  assert.equal(peer.closeCode(), 1001);
});

test("a closed connection ends requests without replies (§5.3.6)", () => {
  const { peer, pending } = open();
  peer.hello();
  peer.put(70, slow());
  const count = peer.received.length;
  peer.session.connectionClosed();
  assert.ok(pending.get(70n)!.ctx.signal.aborted);
  assert.equal(peer.received.length, count);
});

test("the handshake timeout closes with 1008 (§4.5.1)", async () => {
  const { peer } = open({ limits: { ...CONFORMANCE_LIMITS, handshakeTimeoutSeconds: 0.05, idleTimeoutSeconds: 0 } });
  await tick(120);
  assert.equal(peer.closeCode(), 1008);
});

test("the idle timeout closes quiet connections with 1001, not busy ones (§4.5.2-3)", async () => {
  const { peer, pending } = open({ limits: { ...CONFORMANCE_LIMITS, handshakeTimeoutSeconds: 0, idleTimeoutSeconds: 0.05 } });
  peer.hello();
  peer.put(80, slow());
  await tick(150);
  assert.equal(peer.closeCode(), undefined);
  pending.get(80n)!.resolve({ case: "countObjectsReply", value: { $typeName: "fedproto.v1.CountObjectsReply", count: 0n } });
  await tick(150);
  assert.equal(peer.closeCode(), 1001);
});
