/**
 * The interop script, Node side: `node dist/interop.js URL` prints one JSON line.
 *
 * The same steps, data and checks as `tests/interop/script.py` (the Python client), against a server in
 * the conformance profile (docs/protocol.md §18): handshake, a custom call with nested values (`echo`),
 * a 1 KiB and a 64 MiB float32 tensor round trip (digests compared), list/search/delete of objects,
 * typed errors (`fail`), cancel and deadline of a slow call (`sleep`), a notification (`notify`), and
 * 100 pipelined calls. Output: `{"client", "server", "steps": {NAME: {ok, seconds, checks, info,
 * error}}, "ok"}`; docs/interop.md describes every check. Exits 0 when every step passed.
 */
import { performance } from "node:perf_hooks";
import { Client } from "./client/index.js";
import {
  ERROR_CLASSES,
  FedprotoError,
  HostTensor,
  bytesEqual,
  errorCodeName,
  proto,
  digestOf,
  type JsValue,
  type ValueInput,
} from "./wire/index.js";
import {
  CancelledError,
  DeadlineExceededError,
  InvalidArgumentError,
  MethodNotFoundError,
  NotFoundError,
} from "./wire/errors.js";

const MIB = 1 << 20;
/** 64 MiB of float32: more than the conformance frame limit (4 MiB), so chunked both ways. */
const BIG_ELEMENTS = 16 * MIB;
/** §18.2.7: a cancelled `sleep` ends "promptly (within 1 second)". */
const CANCEL_BOUND_S = 1.0;
const PIPELINED = 100;

/** One step's record. */
interface Step {
  ok: boolean;
  seconds: number;
  checks: Record<string, boolean>;
  info: Record<string, unknown>;
  error: string | null;
}

/** The test tensor of both scripts: element i is float32((i mod 65521) * 0.25), exact in binary32. */
function pattern(count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    out[i] = (i % 65521) * 0.25;
  }
  return out;
}

/** The echo step's arguments: the same values as the Python script, ints as bigint (§8.4.4). */
function echoArgs(): { args: ValueInput[]; kwargs: Map<string, ValueInput> } {
  const small = HostTensor.create(
    proto.DType.DTYPE_FLOAT32,
    [2, 2],
    new Uint8Array(new Float32Array([1.5, -2.0, 0.0, 3.25]).buffer),
  );
  const args: ValueInput[] = [
    1n,
    2.5,
    3.0,
    -(2n ** 63n),
    2n ** 62n,
    "zwölf ✓",
    true,
    null,
    Uint8Array.from([0x00, 0xff, 0x10]),
    [1n, [2n, "y", []]],
    { k: [3n], empty: {} },
    Infinity,
  ];
  const kwargs = new Map<string, ValueInput>([
    ["zeta", { nested: [1n, 2n, { deep: null }] }],
    ["alpha", "b"],
    ["tensor", small],
  ]);
  return { args, kwargs };
}

/** Equal values of the same kinds (bigint int vs number double, §8.4.3), maps in order. */
function same(got: JsValue | undefined, expected: ValueInput): boolean {
  if (expected === null || typeof expected !== "object") {
    return typeof got === typeof expected && (got === expected || (Number.isNaN(got) && Number.isNaN(expected)));
  }
  if (expected instanceof HostTensor) {
    return (
      got instanceof HostTensor &&
      got.dtype === expected.dtype &&
      got.shape.join(",") === expected.shape.join(",") &&
      bytesEqual(got.data, expected.data)
    );
  }
  if (expected instanceof Uint8Array) {
    return got instanceof Uint8Array && !(got instanceof HostTensor) && bytesEqual(got, expected);
  }
  if (Array.isArray(expected)) {
    const list = expected as readonly ValueInput[];
    return Array.isArray(got) && got.length === list.length && list.every((item, i) => same(got[i], item));
  }
  const entries: [string, ValueInput][] =
    expected instanceof Map ? [...(expected as ReadonlyMap<string, ValueInput>)] : Object.entries(expected);
  if (!(got instanceof Map) || got.size !== entries.length) {
    return false;
  }
  const keys = [...got.keys()];
  return entries.every(([key, value], i) => keys[i] === key && same(got.get(key), value));
}

/** Runs the steps and keeps their records; an exception ends its step (recorded), not the script. */
class Recorder {
  readonly steps: Record<string, Step> = {};

  async step(name: string, body: (step: Step) => Promise<void>): Promise<void> {
    const step: Step = { ok: false, seconds: 0, checks: {}, info: {}, error: null };
    this.steps[name] = step;
    const started = performance.now();
    try {
      await body(step);
    } catch (err) {
      step.error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    } finally {
      step.seconds = round((performance.now() - started) / 1000, 4);
      const checks = Object.values(step.checks);
      step.ok = step.error === null && checks.length > 0 && checks.every(Boolean);
    }
  }
}

const round = (x: number, digits: number): number => Math.round(x * 10 ** digits) / 10 ** digits;

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

async function roundTrip(client: Client, array: Float32Array, id: string, step: Step): Promise<void> {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  // the digest the connection negotiated (§7.5): in `sha256` under SHA-256, in `digest` otherwise
  const algorithm = client.server.digest;
  const digest = digestOf(algorithm, bytes);
  const t0 = performance.now();
  const info = await client.send(array, { id, tags: ["#interop"] });
  const t1 = performance.now();
  const got = await client.get(id);
  const t2 = performance.now();
  const freed = await client.delete(id);
  step.checks = {
    reply_nbytes: info.nbytes === bytes.length,
    reply_sha256: bytesEqual(algorithm === "sha256" ? info.sha256 : info.digest, digest),
    dtype_float32: got.dtype === proto.DType.DTYPE_FLOAT32,
    shape: got.shape.length === 1 && got.shape[0] === array.length,
    sha256_intact: bytesEqual(digestOf(algorithm, got.data), digest),
    delete_freed_nbytes: freed === bytes.length,
  };
  step.info = {
    bytes: bytes.length,
    send_s: round((t1 - t0) / 1000, 4),
    get_s: round((t2 - t1) / 1000, 4),
    round_trip_mb_s: round((2 * bytes.length) / ((t2 - t0) / 1000) / 1e6, 1),
  };
}

async function steps(client: Client, rec: Recorder): Promise<void> {
  await rec.step("echo", async (step) => {
    const { args, kwargs } = echoArgs();
    const result = await client.call("echo", args, kwargs);
    const isMap = result instanceof Map;
    step.checks = {
      map_of_args_and_kwargs: isMap && [...result.keys()].join(",") === "args,kwargs",
      args_unchanged: isMap && same(result.get("args"), args),
      kwargs_order_kept: isMap && result.get("kwargs") instanceof Map && [...(result.get("kwargs") as Map<string, JsValue>).keys()].join(",") === "zeta,alpha,tensor",
      kwargs_unchanged: isMap && same(result.get("kwargs"), kwargs),
    };
    const datasets = await client.listDatasets();
    const methods = new Set((await client.listMethods()).map((m) => m.name));
    step.checks.fixture_dataset_listed = datasets.some((d) => d.key === "conformance");
    step.checks.hooks_listed = ["echo", "fail", "sleep", "notify", "whoami"].every((m) => methods.has(m));
  });

  await client.clear(); // the quota of the conformance profile is 64 MiB: start empty
  await rec.step("tensor_1k", (step) => roundTrip(client, pattern(256), "interop-1k", step));
  await rec.step("tensor_64m", (step) => roundTrip(client, pattern(BIG_ELEMENTS), "interop-64m", step));

  await rec.step("objects", async (step) => {
    const sets: [string, string[]][] = [
      ["interop-a", ["#x", "#y"]],
      ["interop-b", ["#x"]],
      ["interop-c", ["#y"]],
    ];
    for (const [id, tags] of sets) {
      await client.send(pattern(4), { id, tags, description: id });
    }
    const ids = (list: { id: string }[]): string => list.map((o) => o.id).join(",");
    const listed = ids(await client.listObjects());
    const count = await client.count();
    const byX = ids(await client.search(["#x"]));
    const byXY = ids(await client.search(["#x", "#y"]));
    const freed = await client.delete("interop-b");
    let gone = false;
    try {
      await client.get("interop-b");
    } catch (err) {
      gone = err instanceof NotFoundError;
    }
    const after = ids(await client.listObjects());
    const removed = await client.clear();
    step.checks = {
      list_in_insertion_order: listed === "interop-a,interop-b,interop-c",
      count: count === 3,
      search_one_tag: byX === "interop-a,interop-b",
      search_all_tags: byXY === "interop-a",
      delete_freed_bytes: freed === 16,
      get_deleted_not_found: gone,
      list_after_delete: after === "interop-a,interop-c",
      clear_removed: removed === 2,
    };
  });

  await rec.step("typed_errors", async (step) => {
    for (let code = 1; code <= 16; code++) {
      const name = errorCodeName(code);
      const message = `interop ${name}`;
      try {
        await client.call("fail", [BigInt(code), message]);
        step.checks[name] = false;
      } catch (err) {
        const cls = ERROR_CLASSES.get(code);
        step.checks[name] =
          cls !== undefined && err instanceof cls && err instanceof FedprotoError && err.code === code && err.message === message;
      }
    }
    try {
      await client.call("no-such-method");
      step.checks.method_not_found = false;
    } catch (err) {
      step.checks.method_not_found = err instanceof MethodNotFoundError;
    }
    try {
      await client.call("fail", [99n]);
      step.checks.fail_out_of_range_invalid_argument = false;
    } catch (err) {
      step.checks.fail_out_of_range_invalid_argument = err instanceof InvalidArgumentError;
    }
  });

  await rec.step("cancel", async (step) => {
    const controller = new AbortController();
    const call = client.call("sleep", [30.0], {}, { signal: controller.signal });
    const outcome = call.then(
      () => "resolved",
      (err: unknown) => errorName(err) + (err instanceof CancelledError ? ":cancelled" : ""),
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const t0 = performance.now();
    controller.abort();
    const how = await outcome;
    const cancelS = (performance.now() - t0) / 1000;
    // The server's own CANCELLED frees the request's id and slot (§6.2.10): wait for it.
    while (client.inFlight > 0 && performance.now() - t0 < 5000) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const serverS = (performance.now() - t0) / 1000;
    const t1 = performance.now();
    let deadline = "resolved";
    try {
      await client.call("sleep", [30.0], {}, { deadlineMs: 300 });
    } catch (err) {
      deadline = err instanceof DeadlineExceededError ? "deadline" : errorName(err);
    }
    const deadlineS = (performance.now() - t1) / 1000;
    step.checks = {
      cancelled: how.endsWith(":cancelled"),
      cancel_within_1s: cancelS < CANCEL_BOUND_S,
      server_ended_it_within_1s: client.inFlight === 0 && serverS < CANCEL_BOUND_S,
      deadline_exceeded_typed: deadline === "deadline",
      deadline_within_bound: deadlineS < 0.3 + CANCEL_BOUND_S,
      connection_still_serves: (await client.call("sleep", [0.0])) === 0,
    };
    step.info = { cancel_s: round(cancelS, 4), server_cancel_s: round(serverS, 4), deadline_s: round(deadlineS, 4) };
  });

  await rec.step("notification", async (step) => {
    let replied = false;
    let seenBeforeReply = false;
    const payload = { n: 1n, list: [1n, "two"] };
    const listener = (topic: string, value: JsValue): void => {
      if (topic === "interop" && same(value, payload)) {
        seenBeforeReply = !replied;
      }
    };
    client.on("notification", listener);
    try {
      const reply = await client.call("notify", ["interop", payload]);
      replied = true;
      step.checks = { call_returns_null: reply === null, delivered_before_reply: seenBeforeReply };
    } finally {
      client.off("notification", listener);
    }
  });

  await rec.step("pipelined", async (step) => {
    const limit = client.server.limits.maxInFlight;
    let most = 0;
    let heldBack = 0;
    const t0 = performance.now();
    const calls = Array.from({ length: PIPELINED }, (_, i) => {
      const call = client.call("echo", [BigInt(i)], { tag: `r${i}` });
      most = Math.max(most, client.inFlight);
      heldBack = Math.max(heldBack, client.queued);
      return call;
    });
    const results = await Promise.all(calls);
    const seconds = (performance.now() - t0) / 1000;
    step.checks = {
      all_replied: results.length === PIPELINED,
      each_reply_its_own: results.every((r, i) => same(r, { args: [BigInt(i)], kwargs: { tag: `r${i}` } })),
      distinct: new Set(results.map((r) => ((r as Map<string, JsValue>).get("args") as JsValue[])[0])).size === PIPELINED,
      within_max_in_flight: most <= limit,
    };
    step.info = { calls_per_s: round(PIPELINED / seconds, 1), max_in_flight: limit, most_in_flight: most, most_held_back: heldBack };
  });
}

/** Every step against `url`; the result as a JSON-ready object. */
async function run(url: string): Promise<Record<string, unknown>> {
  const rec = new Recorder();
  const out: Record<string, unknown> = { client: "node", url, server: {}, steps: rec.steps };
  let client: Client | undefined;
  await rec.step("handshake", async (step) => {
    client = await Client.connect(url);
    const server = client.server;
    out.server = { name: server.serverName, id: server.serverId, identity: server.identity };
    const caps = server.capabilities;
    await client.ping();
    step.checks = {
      version_1: server.version === 1,
      identity_anonymous: server.identity === "anonymous",
      conformance_profile: ["conformance", "calls", "datasets"].every((c) => caps.has(c)),
      objects_and_chunked: caps.has("objects") && caps.has("chunked"),
      limits_set: server.limits.maxInFlight > 0 && server.limits.chunkBytes > 0,
      ping: true,
    };
    step.info = { capabilities: [...caps].sort(), max_in_flight: server.limits.maxInFlight };
  });
  if (client === undefined) {
    out.ok = false;
    return out;
  }
  try {
    await steps(client, rec);
  } finally {
    await client.close().catch(() => undefined);
  }
  out.ok = Object.values(rec.steps).every((s) => s.ok);
  return out;
}

async function main(argv: string[]): Promise<number> {
  if (argv.length !== 1) {
    process.stderr.write("usage: node dist/interop.js URL\n");
    return 2;
  }
  const result = await run(argv[0]!);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
