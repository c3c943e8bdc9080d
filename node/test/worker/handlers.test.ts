import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  CallRequestSchema,
  CancelSchema,
  ChunkSchema,
  DType,
  ErrorCode,
  GetObjectRequestSchema,
  ListDatasetsRequestSchema,
  ListMethodsRequestSchema,
  SendObjectRequestSchema,
  TensorInfoSchema,
  type GetObjectReply,
  type SendObjectReply,
} from "../../src/wire/proto.js";
import { chunkRanges, ChunkAssembler, EMPTY_SHA256, HostTensor, makeChunk, sha256, tensorToProto } from "../../src/wire/tensors.js";
import { valueFromProto, valueToProto } from "../../src/wire/values.js";
import { ListValueSchema, ValueSchema, type Value as ProtoValue } from "../../src/wire/proto.js";
import { digestOf } from "../../src/wire/digests.js";
import type { Body } from "../../src/wire/envelope.js";
import { conformanceWorker } from "../../src/worker/conformance.js";
import type { RequestFailure } from "../../src/worker/session.js";
import { Peer, tick } from "./helpers.js";

function connect(maxFrameBytes = 0n, limits = {}): Peer {
  const peer = new Peer();
  peer.session = conformanceWorker({ limits: { chunkBytes: 1024, maxFrameBytes: 4096, maxObjectBytes: 1 << 20, ...limits } }).openSession(peer);
  peer.hello({ maxFrameBytes });
  return peer;
}

const bytes = (n: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff);
const announce = (id: string, n: number, digest: Uint8Array = new Uint8Array(0)): Body => ({
  case: "sendObject",
  value: create(SendObjectRequestSchema, {
    id,
    payload: {
      case: "chunked",
      value: create(TensorInfoSchema, { dtype: DType.DTYPE_UINT8, shape: [BigInt(n)], nbytes: BigInt(n), sha256: digest }),
    },
  }),
});
const get = (id: string): Body => ({ case: "getObject", value: create(GetObjectRequestSchema, { id }) });

test("chunked upload with a trailing digest, then a chunked download (§7.3)", async () => {
  const peer = connect();
  const data = bytes(3000);
  peer.put(2, announce("big", data.length));
  const ranges = [...chunkRanges(data.length, 1024)];
  ranges.forEach((range, i) => peer.put(2, { case: "chunk", value: makeChunk(data, range, i === ranges.length - 1 ? sha256(data) : undefined) }));
  await tick();
  const stored = peer.withId(2).at(-1)!;
  assert.equal(stored.body.case, "sendObjectReply");
  assert.deepEqual((stored.body.value as SendObjectReply).info?.tensor?.sha256, sha256(data));
  const before = peer.received.length;
  peer.put(3, get("big"));
  await peer.waitFor(before + 4);
  const frames = peer.withId(3);
  assert.deepEqual(frames.map((f) => f.body.case), ["chunk", "chunk", "chunk", "getObjectReply"]);
  const asm = new ChunkAssembler({ totalBytes: data.length, maxChunkBytes: 1024, trailingDigest: "ignore" });
  for (const f of frames.slice(0, -1)) asm.push(f.body.value as ReturnType<typeof create<typeof ChunkSchema>>);
  const reply = frames.at(-1)!.body.value as GetObjectReply;
  assert.equal(reply.tensor, undefined);
  assert.deepEqual(asm.finish(reply.info!.tensor!.sha256), data);
});

test("downloads fit the client's frame limit in smaller chunks (§7.3.19)", async () => {
  const peer = connect(1100n);
  const data = bytes(2500);
  peer.put(2, announce("b", data.length, sha256(data)));
  for (const range of chunkRanges(data.length, 1024)) peer.put(2, { case: "chunk", value: makeChunk(data, range) });
  await tick();
  const before = peer.received.length;
  peer.put(3, get("b"));
  await peer.waitFor(before + 4);
  assert.ok(peer.frames.every((f) => f.length <= 1100));
  assert.equal(peer.withId(3).at(-1)?.body.case, "getObjectReply");
});

test("upload errors: bad digest is DATA_LOSS, a bad chunk INVALID_ARGUMENT, nothing stored (§7.3.8, §7.3.10)", async () => {
  const peer = connect();
  const data = bytes(1500);
  peer.put(2, announce("x", data.length, sha256(bytes(10))));
  for (const range of chunkRanges(data.length, 1024)) peer.put(2, { case: "chunk", value: makeChunk(data, range) });
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.DATA_LOSS, 2n]);
  peer.put(3, announce("x", data.length, sha256(data)));
  peer.put(3, { case: "chunk", value: makeChunk(data, { offset: 1024, length: 476 }) });
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 3n]);
  const count = peer.received.length;
  peer.put(3, { case: "chunk", value: makeChunk(data, { offset: 0, length: 1024 }) }); // §7.3.12: ignored
  await tick();
  assert.equal(peer.received.length, count);
  peer.put(4, get("x"));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.NOT_FOUND, 4n]);
});

test("empty uploads complete at once; a wrong digest there is DATA_LOSS (§7.3.11, §7.3.35)", async () => {
  const peer = connect();
  peer.put(2, announce("e", 0));
  await tick();
  assert.equal(peer.withId(2).at(-1)?.body.case, "sendObjectReply");
  peer.put(3, announce("e2", 0, EMPTY_SHA256));
  await tick();
  assert.equal(peer.withId(3).at(-1)?.body.case, "sendObjectReply");
  peer.put(4, announce("e3", 0, sha256(bytes(1))));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.DATA_LOSS, 4n]);
});

test("announcements are refused before any chunk: quota, existing id (§7.3.9)", async () => {
  const peer = connect(0n, { maxObjectBytes: 2000 });
  peer.put(2, announce("q", 3000, sha256(bytes(3000))));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.RESOURCE_EXHAUSTED, 2n]);
  peer.put(3, { case: "sendObject", value: create(SendObjectRequestSchema, { id: "i", payload: { case: "tensor", value: tensorToProto(HostTensor.create(DType.DTYPE_UINT8, [1], bytes(1))) } }) });
  await tick();
  peer.put(4, announce("i", 10, sha256(bytes(10))));
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.ALREADY_EXISTS, 4n]);
});

test("a cancelled upload stores nothing (§6.2.7)", async () => {
  const peer = connect();
  const data = bytes(2048);
  peer.put(2, announce("c", data.length, sha256(data)));
  peer.put(2, { case: "chunk", value: makeChunk(data, { offset: 0, length: 1024 }) });
  peer.put(2, { case: "cancel", value: create(CancelSchema) });
  peer.put(2, { case: "chunk", value: makeChunk(data, { offset: 1024, length: 1024 }) });
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.CANCELLED, 2n]);
  peer.put(3, get("c"));
  await tick();
  assert.equal(peer.lastError().code, ErrorCode.NOT_FOUND);
});

test("conformance hooks: echo, fail, sleep (cancellable), notify before the reply, whoami (§18.2)", async () => {
  const peer = connect();
  const call = (id: number, method: string, args: Parameters<typeof valueToProto>[0][] = []): void =>
    peer.put(id, { case: "call", value: create(CallRequestSchema, { method, args: args.map((a) => valueToProto(a)) }) });
  call(2, "echo", [1n, 2.0, "s"]);
  await tick();
  const echoed = valueFromProto((peer.withId(2).at(-1)!.body.value as { result: Parameters<typeof valueFromProto>[0] }).result);
  assert.deepEqual(echoed, new Map<string, unknown>([["args", [1n, 2, "s"]], ["kwargs", new Map()]]));
  call(3, "fail", [16n, "lost"]);
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().message], [ErrorCode.DATA_LOSS, "lost"]);
  call(4, "fail", [17n]);
  await tick();
  assert.equal(peer.lastError().code, ErrorCode.INVALID_ARGUMENT);
  call(5, "sleep", [30n]);
  peer.put(5, { case: "cancel", value: create(CancelSchema) });
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.CANCELLED, 5n]);
  call(6, "sleep", [61.0]);
  await tick();
  assert.equal(peer.lastError().code, ErrorCode.INVALID_ARGUMENT);
  call(7, "notify", ["topic", "payload"]);
  await tick();
  assert.deepEqual(peer.received.slice(-2).map((e) => [e.requestId, e.body.case]), [[0n, "notification"], [7n, "callReply"]]);
  call(8, "whoami");
  await tick();
  assert.equal(valueFromProto((peer.withId(8).at(-1)!.body.value as { result: Parameters<typeof valueFromProto>[0] }).result), "anonymous");
  peer.put(9, { case: "listMethods", value: create(ListMethodsRequestSchema) });
  peer.put(10, { case: "listDatasets", value: create(ListDatasetsRequestSchema) });
  await tick();
  assert.deepEqual((peer.withId(9).at(-1)!.body.value as { methods: { name: string }[] }).methods.map((m) => m.name), ["echo", "fail", "notify", "sleep", "whoami"]);
  assert.deepEqual((peer.withId(10).at(-1)!.body.value as { datasets: { key: string }[] }).datasets.map((d) => d.key), ["conformance"]);
});

/** A list value `depth` levels deep, built message by message (valueToProto stops at 32 levels). */
function nestedList(depth: number): ProtoValue {
  let value = create(ValueSchema, { kind: { case: "intValue", value: 1n } });
  for (let i = 1; i < depth; i++) {
    value = create(ValueSchema, { kind: { case: "listValue", value: create(ListValueSchema, { items: [value] }) } });
  }
  return value;
}

test("too deep either way: a reply or notification over 32 levels is INVALID_ARGUMENT, never sent (§8.3.6, §8.3.7)", async () => {
  const peer = connect();
  const call = (id: number, method: string, args: ProtoValue[]): void => peer.put(id, { case: "call", value: create(CallRequestSchema, { method, args }) });
  call(2, "echo", [nestedList(30)]); // 32 levels back: sent
  await tick();
  assert.equal(peer.withId(2).at(-1)?.body.case, "callReply");
  for (const [id, depth] of [[3, 31], [4, 45]] as const) {
    call(id, "echo", [nestedList(depth)]); // accepted (at most 64 levels), but 33 or more would come back
    await tick();
    const error = peer.lastError();
    assert.deepEqual([error.code, error.requestId, error.details], [ErrorCode.INVALID_ARGUMENT, BigInt(id), { limit: "32" }], `echo of ${depth} levels`);
    assert.match(error.message, /§8\.3\.7/);
  }
  call(7, "notify", [valueToProto("deep"), nestedList(33)]);
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.INVALID_ARGUMENT, 7n]);
  assert.ok(!peer.received.some((e) => e.body.case === "notification"));
  // Nested beyond what conforming decoders read (§3.3.7): MALFORMED with request id 0, the session goes on.
  call(8, "echo", [nestedList(60)]);
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.MALFORMED, 0n]);
  assert.equal(peer.withId(8).length, 0);
  // Whatever was asked, every frame the worker sent decodes (the Peer decodes each one as it arrives).
  assert.ok(peer.frames.length >= 6);
});

test("an exposed method's exception text stays on the worker unless the owner exposes it (§13.1.7, §11.4.3)", async () => {
  for (const expose of [false, true]) {
    const logged: RequestFailure[] = [];
    const worker = conformanceWorker({ exposeErrors: expose, onFailure: (f) => logged.push(f) });
    worker.method("broken", () => {
      throw new RangeError("disk /var/lib/owner full");
    });
    const peer = new Peer();
    peer.session = worker.openSession(peer);
    peer.hello();
    peer.put(2, { case: "call", value: create(CallRequestSchema, { method: "broken" }) });
    await tick();
    const error = peer.lastError();
    assert.deepEqual([error.code, error.requestId], [ErrorCode.INTERNAL, 2n]);
    assert.equal(error.message.includes("/var/lib/owner"), expose, error.message);
    assert.ok(error.message.includes(`error id ${error.details.error_id}`), error.message);
    assert.deepEqual(logged.map((f) => [f.errorId, f.kind]), [[error.details.error_id, "call"]]);
  }
});

test("a notification above the client's frame limit is not sent; notify answers RESOURCE_EXHAUSTED (§6.4.8)", async () => {
  const peer = connect(1024n);
  peer.put(2, { case: "call", value: create(CallRequestSchema, { method: "notify", args: [valueToProto("t"), valueToProto("x".repeat(2000))] }) });
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.RESOURCE_EXHAUSTED, 2n]);
  assert.ok(!peer.received.some((e) => e.body.case === "notification"));
});

test("without notifications, notify answers UNIMPLEMENTED and nothing is pushed (§6.4.2, §18.2.9)", async () => {
  const peer = new Peer();
  const worker = conformanceWorker({ notifications: false });
  assert.ok(!worker.capabilities.includes("notifications"));
  peer.session = worker.openSession(peer);
  peer.hello();
  peer.put(2, { case: "call", value: create(CallRequestSchema, { method: "notify", args: [valueToProto("t"), valueToProto(1n)] }) });
  await tick();
  assert.deepEqual([peer.lastError().code, peer.lastError().requestId], [ErrorCode.UNIMPLEMENTED, 2n]);
  assert.ok(!peer.received.some((e) => e.body.case === "notification"));
});

test("digest negotiation: first known offer, sha256 by default; uploads and downloads under xxh3-128 (§7.5)", async () => {
  const chosen = (digests?: string[]): string => {
    const peer = new Peer();
    peer.session = conformanceWorker({ limits: { chunkBytes: 1024, maxFrameBytes: 4096 } }).openSession(peer);
    const env = peer.hello(digests === undefined ? {} : { digests });
    assert.equal(env.body.case, "welcome");
    return (env.body.value as { digest: string }).digest;
  };
  assert.equal(chosen(), "sha256");
  assert.equal(chosen(["md5", "xxh3-128"]), "xxh3-128");
  assert.equal(chosen(["md5"]), "sha256");
  const peer = new Peer();
  peer.session = conformanceWorker({ limits: { chunkBytes: 1024, maxFrameBytes: 4096, maxObjectBytes: 1 << 20 } }).openSession(peer);
  peer.hello({ digests: ["xxh3-128"] });
  const data = bytes(3000);
  const header = (digest: Uint8Array, field: "sha256" | "digest"): Body => ({
    case: "sendObject",
    value: create(SendObjectRequestSchema, {
      id: "x",
      overwrite: true,
      payload: {
        case: "chunked",
        value: create(TensorInfoSchema, { dtype: DType.DTYPE_UINT8, shape: [3000n], nbytes: 3000n, [field]: digest }),
      },
    }),
  });
  const send = async (rid: number, body: Body): Promise<void> => {
    peer.put(rid, body);
    for (const range of chunkRanges(data.length, 1024)) peer.put(rid, { case: "chunk", value: makeChunk(data, range, undefined, "xxh3-128") });
    await tick();
  };
  await send(2, header(digestOf("xxh3-128", data), "digest"));
  const stored = peer.withId(2).at(-1)!;
  assert.equal(stored.body.case, "sendObjectReply");
  assert.deepEqual((stored.body.value as SendObjectReply).info?.tensor?.digest, digestOf("xxh3-128", data));
  assert.equal((stored.body.value as SendObjectReply).info?.tensor?.sha256.length, 0);
  await send(3, header(new Uint8Array(16), "digest"));
  assert.equal(peer.withId(3).at(-1)!.body.case, "error");
  assert.equal(peer.lastError().code, ErrorCode.DATA_LOSS);
  await send(4, header(sha256(data), "sha256"));
  assert.equal(peer.withId(4).at(-1)!.body.case, "error");
  assert.equal(peer.lastError().code, ErrorCode.INVALID_ARGUMENT);
  peer.put(5, get("x"));
  await tick();
  const reply = peer.withId(5).at(-1)!.body.value as GetObjectReply;
  const assembler = new ChunkAssembler({ totalBytes: 3000, maxChunkBytes: 1024, trailingDigest: "ignore", algorithm: "xxh3-128" });
  for (const env of peer.withId(5)) if (env.body.case === "chunk") assembler.push(env.body.value);
  assert.deepEqual(assembler.finish(reply.info!.tensor!.digest), data);
});
