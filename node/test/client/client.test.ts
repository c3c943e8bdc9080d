/**
 * The client over real sockets, against the Node worker in the conformance profile (docs/protocol.md
 * §18) in this process, on loopback: every request, typed errors, pipelining within the in-flight limit,
 * cancel, deadlines, chunked transfers, notifications, goodbye and shutdown.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { create } from "@bufbuild/protobuf";
import { WebSocketServer } from "ws";
import { Client, ConnectionClosedError, typedArrayOf } from "../../src/client/index.js";
import {
  AlreadyExistsError,
  CancelledError,
  DeadlineExceededError,
  ERROR_CLASSES,
  FedprotoError,
  HostTensor,
  MethodNotFoundError,
  NotFoundError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  decodeEnvelope,
  encodeEnvelope,
  errorCodeName,
  limitsToProto,
  makeEnvelope,
  CONFORMANCE_LIMITS,
  digestOf,
  proto,
  sha256,
  type JsValue,
  type ValueInput,
} from "../../src/wire/index.js";
import { conformanceWorker } from "../../src/worker/conformance.js";
import type { WorkerServer } from "../../src/worker/server.js";

const MIB = 1 << 20;

/** Runs `body` with a started conformance worker and a connected client; both closed afterwards. */
async function withClient(
  body: (client: Client, server: WorkerServer) => Promise<void>,
  options: { tokens?: Record<string, string>; token?: string } = {},
): Promise<void> {
  const server = await conformanceWorker({ tokens: options.tokens }).serve({ host: "127.0.0.1", port: 0 });
  let client: Client | undefined;
  try {
    client = await Client.connect(server.url, { token: options.token });
    await body(client, server);
  } finally {
    await client?.close().catch(() => undefined);
    await server.close(0);
  }
}

const floats = (n: number, seed = 1): Float32Array => Float32Array.from({ length: n }, (_, i) => ((i * seed) % 997) * 0.5);
const bytesOf = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

test("connect reads the Welcome; ping answers (§4, §6.1)", async () => {
  await withClient(async (client) => {
    assert.equal(client.server.version, 1);
    assert.equal(client.server.identity, "anonymous");
    assert.ok(client.server.capabilities.has("conformance"));
    assert.equal(client.server.limits.maxInFlight, 32);
    assert.ok((await client.ping()) >= 0);
    assert.equal(await client.call("whoami"), "anonymous");
  });
});

test("tokens: the right one names the identity, a wrong one is UNAUTHENTICATED (§15)", async () => {
  const tokens = { alice: "tok-a" };
  await withClient(async (client) => assert.equal(client.server.identity, "alice"), { tokens, token: "tok-a" });
  const server = await conformanceWorker({ tokens }).serve({ port: 0 });
  try {
    await assert.rejects(Client.connect(server.url, { token: "nope" }), UnauthenticatedError);
  } finally {
    await server.close(0);
  }
});

test("a port nothing listens on is a ConnectionClosedError (UNAVAILABLE)", async () => {
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const err = await Client.connect(`ws://127.0.0.1:${port}`, { connectTimeoutMs: 5000 }).catch((e: unknown) => e);
  assert.ok(err instanceof ConnectionClosedError && err instanceof UnavailableError, String(err));
});

test("objects: send, get, list, count, search, delete, clear (§9)", async () => {
  await withClient(async (client) => {
    const a = floats(6);
    const info = await client.send(a, { id: "a", tags: ["#x", "#y"], description: "first", shape: [2, 3] });
    assert.deepEqual([info.id, info.nbytes, [...info.shape], [...info.tags]], ["a", 24, [2, 3], ["#x", "#y"]]);
    // the default offer puts xxh3-128 first, and this worker computes it (§7.5.4)
    assert.equal(client.server.digest, "xxh3-128");
    assert.deepEqual([info.sha256.length, info.digest], [0, digestOf("xxh3-128", bytesOf(a))]);
    const got = await client.get("a");
    assert.equal(got.dtype, proto.DType.DTYPE_FLOAT32);
    assert.deepEqual([...got.shape], [2, 3]);
    assert.deepEqual(typedArrayOf(got), a);
    await client.send(new Int32Array([1, 2, 3]), { id: "b", tags: ["#x"] });
    await client.send(HostTensor.create(proto.DType.DTYPE_BOOL, [2], Uint8Array.from([1, 0])), { id: "c" });
    await assert.rejects(client.send(new Int32Array([9]), { id: "b" }), AlreadyExistsError);
    await client.send(new Int32Array([9]), { id: "b", overwrite: true });
    assert.deepEqual((await client.listObjects()).map((o) => o.id), ["a", "b", "c"]);
    assert.equal(await client.count(), 3);
    assert.deepEqual((await client.search(["#x"])).map((o) => o.id), ["a"]);
    assert.deepEqual((await client.search([])).map((o) => o.id), ["a", "b", "c"]);
    assert.equal(await client.delete("a"), 24);
    await assert.rejects(client.get("a"), NotFoundError);
    assert.equal(await client.clear(), 2);
    assert.equal(await client.count(), 0);
    const chosen = await client.send(new Uint8Array([1]));
    assert.ok(chosen.id.length > 0, "the server chooses an id (§9.2.3)");
  });
});

test("tensors over chunk_bytes and over max_frame_bytes travel in verified chunks (§7.3)", async () => {
  await withClient(async (client) => {
    for (const size of [300 * 1024, 5 * MIB + 4]) {
      const data = floats(size / 4, 7);
      const sent: number[] = [];
      const received: number[] = [];
      const info = await client.send(data, { id: "big", overwrite: true, onProgress: (done) => sent.push(done) });
      assert.equal(info.nbytes, size);
      const got = await client.get("big", { onProgress: (done) => received.push(done) });
      assert.deepEqual(sha256(got.data), sha256(bytesOf(data)));
      assert.ok(sent.length > 1 && sent.at(-1) === size, "sent in chunks");
      assert.ok(received.length > 1 && received.at(-1) === size, "received in chunks");
    }
  });
});

test("a ping is answered while a large upload is on its way (§5.4.4, §7.3.32)", async () => {
  await withClient(async (client) => {
    const upload = client.send(floats(4 * MIB, 3), { id: "u" }).then(() => performance.now());
    await new Promise((resolve) => setImmediate(resolve));
    await client.ping();
    const pinged = performance.now();
    assert.ok(pinged < (await upload), "the ping came back before the 16 MiB upload finished");
  });
});

test("echo keeps values and kinds; kwargs keep their order (§8, §18.2.2)", async () => {
  await withClient(async (client) => {
    const tensor = HostTensor.create(proto.DType.DTYPE_INT64, [2], new Uint8Array(16).fill(1));
    const args = [1n, 2.0, -(2n ** 63n), "s", null, true, Uint8Array.from([0, 255]), [1n, [2.5]], tensor];
    const result = (await client.call("echo", args, new Map<string, ValueInput>([["z", 1n], ["a", { k: [] }]]))) as Map<string, JsValue>;
    assert.deepEqual([...result.keys()], ["args", "kwargs"]);
    const back = result.get("args") as JsValue[];
    assert.equal(back[0], 1n);
    assert.equal(typeof back[1], "number");
    assert.equal(back[2], -(2n ** 63n));
    assert.deepEqual(back.slice(3, 8), ["s", null, true, Uint8Array.from([0, 255]), [1n, [2.5]]]);
    assert.ok(back[8] instanceof HostTensor && back[8].dtype === proto.DType.DTYPE_INT64);
    const kwargs = result.get("kwargs") as Map<string, JsValue>;
    assert.deepEqual([...kwargs.keys()], ["z", "a"]);
    assert.deepEqual(kwargs.get("a"), new Map([["k", []]]));
  });
});

test("every error code arrives as its own class (§13.2, §18.2.3)", async () => {
  await withClient(async (client) => {
    for (let code = 1; code <= 16; code++) {
      const err = await client.call("fail", [BigInt(code), `m${code}`]).catch((e: unknown) => e);
      assert.ok(err instanceof ERROR_CLASSES.get(code)!, `${errorCodeName(code)}: ${String(err)}`);
      assert.ok(err instanceof FedprotoError);
      assert.equal(err.code, code);
      assert.equal(err.message, `m${code}`);
    }
    await assert.rejects(client.call("nope"), MethodNotFoundError);
  });
});

test("many calls at once stay within max_in_flight and get their own replies (§5.4, §5.5.7)", async () => {
  await withClient(async (client) => {
    const limit = client.server.limits.maxInFlight;
    let most = 0;
    const calls = Array.from({ length: 200 }, (_, i) => {
      const call = client.call("echo", [BigInt(i)]);
      most = Math.max(most, client.inFlight);
      return call;
    });
    assert.ok(client.queued > 0, "requests over the limit wait in the client");
    const results = (await Promise.all(calls)) as Map<string, JsValue>[];
    results.forEach((r, i) => assert.deepEqual(r.get("args"), [BigInt(i)]));
    assert.equal(most, limit);
    assert.equal(client.inFlight, 0);
  });
});

test("aborting a call sends Cancel: CANCELLED at once, the server's answer frees the slot (§6.2)", async () => {
  await withClient(async (client) => {
    const controller = new AbortController();
    const slow = client.call("sleep", [30.0], {}, { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const t0 = performance.now();
    controller.abort();
    await assert.rejects(slow, CancelledError);
    assert.ok(performance.now() - t0 < 1000);
    const deadline = Date.now() + 1000; // §18.2.7: within 1 second
    while (client.inFlight > 0 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(client.inFlight, 0, "the server ended the sleep");
    await assert.rejects(client.call("sleep", [1.0], {}, { signal: AbortSignal.abort() }), CancelledError);
    assert.equal(client.inFlight, 0, "an aborted signal sends nothing");
    assert.equal(await client.call("sleep", [0.0]), 0);
  });
});

test("a deadline ends a slow call with DEADLINE_EXCEEDED (§5.6)", async () => {
  await withClient(async (client) => {
    const t0 = performance.now();
    await assert.rejects(client.call("sleep", [30.0], {}, { deadlineMs: 200 }), DeadlineExceededError);
    assert.ok(performance.now() - t0 < 1500);
  });
});

test("a request held back past its deadline fails without being sent (§5.6.10)", async () => {
  await withClient(async (client) => {
    const limit = client.server.limits.maxInFlight;
    const busy = Array.from({ length: limit }, () => client.call("sleep", [0.5]));
    const t0 = performance.now();
    await assert.rejects(client.call("echo", [1n], {}, { deadlineMs: 100 }), DeadlineExceededError);
    assert.ok(performance.now() - t0 < 450, "failed at its deadline, not when a place freed");
    assert.equal(client.inFlight, limit);
    await Promise.all(busy);
  });
});

test("a notification is delivered before the reply that follows it (§6.4.6, §18.2.8)", async () => {
  await withClient(async (client) => {
    const seen: [string, JsValue, boolean][] = [];
    let replied = false;
    client.on("notification", (topic, payload) => seen.push([topic, payload, replied]));
    assert.equal(await client.call("notify", ["news", [1n, "x"]]), null);
    replied = true;
    assert.deepEqual(seen, [["news", [1n, "x"], false]]);
  });
});

test("requests over the frame limit fail locally; over the argument limit, on the server (§14.2.7, §11.3)", async () => {
  await withClient(async (client) => {
    await assert.rejects(client.call("echo", ["x".repeat(5 * MIB)]), ResourceExhaustedError);
    await assert.rejects(client.call("echo", ["x".repeat(2 * MIB)]), ResourceExhaustedError);
    assert.ok((await client.ping()) >= 0, "the connection survived both");
  });
});

test("close says goodbye: calls in flight end CANCELLED, later ones fail (§6.3)", async () => {
  await withClient(async (client) => {
    const slow = client.call("sleep", [30.0]).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await client.close();
    const err = await slow;
    assert.ok(err instanceof CancelledError || err instanceof ConnectionClosedError, String(err));
    await assert.rejects(client.ping(), ConnectionClosedError);
  });
});

test("a server shutdown: goodbye event, then every request ends UNAVAILABLE (§6.3.3 to §6.3.6)", async () => {
  await withClient(async (client, server) => {
    const events: string[] = [];
    client.on("goodbye", () => events.push("goodbye"));
    const closed = new Promise<number>((resolve) => client.on("close", (code) => resolve(code)));
    const slow = client.call("sleep", [30.0]).catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await server.close(100);
    assert.ok((await slow) instanceof UnavailableError);
    assert.equal(await closed, 1001);
    assert.deepEqual(events, ["goodbye"]);
  });
});

test("listMethods and listDatasets describe the conformance profile (§10, §11.6, §18)", async () => {
  await withClient(async (client) => {
    const methods = await client.listMethods();
    assert.deepEqual(methods.map((m) => m.name), ["echo", "fail", "notify", "sleep", "whoami"]);
    const sleep = methods.find((m) => m.name === "sleep")!;
    assert.deepEqual(sleep.parameters.map((p) => [p.name, p.type, p.required]), [["seconds", "double", true]]);
    const [dataset] = await client.listDatasets();
    assert.equal(dataset!.key, "conformance");
    assert.equal(dataset!.sampleCount, 64);
    assert.deepEqual([...dataset!.featureShape], [4]);
  });
});

test("a server that selects no subprotocol is still reached (§2.2.3, §2.2.4)", async () => {
  // A minimal server: no subprotocol selected, a Welcome for the Hello, a Pong for each Ping.
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, handleProtocols: () => false });
  await new Promise((resolve) => wss.once("listening", resolve));
  wss.on("connection", (ws) => {
    ws.on("message", (data: Buffer) => {
      const env = decodeEnvelope(new Uint8Array(data));
      const welcome = create(proto.WelcomeSchema, { version: 1, serverId: "bare", limits: limitsToProto(CONFORMANCE_LIMITS) });
      const reply: proto.Envelope["body"] =
        env.body.case === "hello"
          ? { case: "welcome", value: welcome }
          : { case: "pong", value: create(proto.PongSchema, { payload: (env.body.value as proto.Ping).payload }) };
      ws.send(encodeEnvelope(makeEnvelope(env.requestId, reply)));
    });
  });
  const { port } = wss.address() as { port: number };
  try {
    const client = await Client.connect(`ws://127.0.0.1:${port}`);
    assert.equal(client.server.serverId, "bare");
    await client.ping();
    client.terminate();
  } finally {
    for (const ws of wss.clients) ws.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
});

test("garbage or a text frame from the server: the client closes with 1002 or 1003 (§3.3.6, §3.2.3)", async () => {
  for (const [bad, expected] of [[Uint8Array.from([0xff, 0xff, 0xff]), 1002], ["hello", 1003]] as const) {
    const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => wss.once("listening", resolve));
    const closeCode = new Promise<number>((resolve) => {
      wss.on("connection", (ws) => {
        ws.on("close", (code: number) => resolve(code));
        ws.on("message", (data: Buffer) => {
          const env = decodeEnvelope(new Uint8Array(data));
          if (env.body.case === "hello") {
            const welcome = create(proto.WelcomeSchema, { version: 1, limits: limitsToProto(CONFORMANCE_LIMITS) });
            ws.send(encodeEnvelope(makeEnvelope(env.requestId, { case: "welcome", value: welcome })));
          } else {
            ws.send(bad);
          }
        });
      });
    });
    const { port } = wss.address() as { port: number };
    try {
      const client = await Client.connect(`ws://127.0.0.1:${port}`);
      await assert.rejects(client.ping(), ConnectionClosedError);
      assert.equal(await closeCode, expected);
    } finally {
      for (const ws of wss.clients) ws.terminate();
      await new Promise((resolve) => wss.close(resolve));
    }
  }
});
