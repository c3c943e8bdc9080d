import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { CallRequestSchema } from "../../src/wire/proto.js";
import { InternalError, InvalidArgumentError, MethodNotFoundError, NotFoundError, ResourceExhaustedError } from "../../src/wire/errors.js";
import { mapEntriesToProto, valueFromProto, valueToProto, type JsValue, type ValueInput } from "../../src/wire/values.js";
import { MethodRegistry, type BoundArguments, type CallContext } from "../../src/worker/methods.js";

const ctx: CallContext = { identity: "alice", signal: new AbortController().signal, notify: () => undefined };

function registry(): { reg: MethodRegistry; seen: BoundArguments[] } {
  const reg = new MethodRegistry();
  const seen: BoundArguments[] = [];
  const record = (args: BoundArguments) => {
    seen.push(args);
    return null;
  };
  reg.register("f", record, {
    params: [
      { name: "a", type: "int", kind: "positional" },
      { name: "b", type: "double" },
      { name: "c", type: "string", default: "dflt" },
      { name: "rest", kind: "var_positional" },
      { name: "k", type: "bool", kind: "keyword", default: false },
      { name: "extra", type: "int", kind: "var_keyword" },
    ],
  });
  reg.register("g", record, { params: [{ name: "x", kind: "positional" }] });
  reg.register("bad", () => new Date() as unknown as ValueInput);
  reg.register("boom", () => {
    throw new TypeError("it broke");
  });
  reg.register("typed", () => {
    throw new NotFoundError("gone");
  });
  return { reg, seen };
}

async function call(reg: MethodRegistry, method: string, args: ValueInput[] = [], kwargs: Record<string, ValueInput> = {}, max = 0): Promise<JsValue> {
  const request = create(CallRequestSchema, { method, args: args.map((a) => valueToProto(a)), kwargs: mapEntriesToProto(kwargs) });
  const reply = await reg.call(request, ctx, max);
  return valueFromProto(reply.result!);
}

test("binding by position and keyword, defaults, var_positional and var_keyword (§11.2)", async () => {
  const { reg, seen } = registry();
  assert.equal(await call(reg, "f", [1n, 2n, "s", "r1", "r2"], { k: true, z: 5n }), null);
  assert.deepEqual(seen[0], { a: 1n, b: 2, c: "s", rest: ["r1", "r2"], k: true, extra: new Map([["z", 5n]]) });
  assert.equal(typeof seen[0]!.b, "number"); // §11.2.5: an int for a double becomes a double
  await call(reg, "f", [1n], { b: 1.5 });
  assert.deepEqual(seen[1], { a: 1n, b: 1.5, c: "dflt", rest: [], k: false, extra: new Map() });
  // §11.2.8: a positional-only name given by keyword goes to **extra when there is one.
  await call(reg, "f", [1n, 2.5], { a: 7n });
  assert.deepEqual(seen[2]!.extra, new Map([["a", 7n]]));
});

test("binding errors are INVALID_ARGUMENT and do not run the method (§11.2.2, §11.2.3)", async () => {
  const { reg, seen } = registry();
  const bad: [string, ValueInput[], Record<string, ValueInput>][] = [
    ["f", [], {}], // missing a
    ["f", [1n], {}], // missing b
    ["f", [1n, 2.0], { b: 3.0 }], // b twice
    ["f", ["x", 2.0], {}], // a is int
    ["f", [1n, 2.0], { k: 1n }], // k is bool
    ["f", [1n, 2.0], { z: "s" }], // **extra is int
    ["g", [], { x: 1n }], // positional-only by keyword, no **kwargs
    ["g", [1n, 2n], {}], // too many
    ["g", [1n], { y: 1n }], // unknown keyword
  ];
  for (const [method, args, kwargs] of bad) {
    await assert.rejects(call(reg, method, args, kwargs), InvalidArgumentError, `${method} ${JSON.stringify(args, (_k, v) => (typeof v === "bigint" ? `${v}n` : v))}`);
  }
  assert.equal(seen.length, 0);
});

test("unknown methods, argument size, failures and unrepresentable results (§11.1.3, §11.3, §11.4)", async () => {
  const { reg } = registry();
  await assert.rejects(call(reg, "nope"), MethodNotFoundError);
  await assert.rejects(call(reg, "toString"), MethodNotFoundError);
  await assert.rejects(call(reg, "g", ["x".repeat(100)], {}, 50), ResourceExhaustedError);
  // Not a protocol error: it reaches the session as thrown, which hides its text (§13.1.7, session tests).
  await assert.rejects(call(reg, "boom"), (err: unknown) => err instanceof TypeError && err.message === "it broke");
  await assert.rejects(call(reg, "typed"), NotFoundError);
  await assert.rejects(call(reg, "bad"), InternalError);
});

test("a result deeper than 32 levels is INVALID_ARGUMENT, not INTERNAL (§8.3.7)", async () => {
  const reg = new MethodRegistry();
  reg.register("nest", ({ levels }) => {
    let value: ValueInput = 1n;
    for (let i = 1; i < Number(levels as bigint); i++) value = [value];
    return value;
  }, { params: [{ name: "levels", type: "int" }] });
  assert.equal(typeof (await call(reg, "nest", [32n])), "object");
  await assert.rejects(call(reg, "nest", [33n]), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError && !(err instanceof InternalError));
    assert.deepEqual(err.details, { limit: "32" });
    return true;
  });
});

test("list_methods is sorted byte-wise with parameter infos (§11.6)", () => {
  const { reg } = registry();
  const methods = reg.list();
  assert.deepEqual(methods.map((m) => m.name), ["bad", "boom", "f", "g", "typed"]);
  const f = methods.find((m) => m.name === "f")!;
  assert.deepEqual(
    f.parameters.map((p) => [p.name, p.type, p.kind, p.required]),
    [
      ["a", "int", "positional", true],
      ["b", "double", "positional_or_keyword", true],
      ["c", "string", "positional_or_keyword", false],
      ["rest", "any", "var_positional", false],
      ["k", "bool", "keyword", false],
      ["extra", "int", "var_keyword", false],
    ],
  );
});

test("declarations Python could not write are refused", () => {
  const reg = new MethodRegistry();
  assert.throws(() => reg.register("", () => null));
  assert.throws(() => reg.register("m", () => null, { params: [{ name: "k", kind: "keyword" }, { name: "p" }] }), /out of order/);
  assert.throws(() => reg.register("m", () => null, { params: [{ name: "a", default: 1n }, { name: "b" }] }), /follows/);
  assert.throws(() => reg.register("m", () => null, { params: [{ name: "a" }, { name: "a" }] }), /repeated/);
  assert.throws(() => reg.register("m", () => null, { params: [{ name: "a", type: "float" as "double" }] }), /unknown type/);
  reg.register("m", () => null);
  assert.throws(() => reg.register("m", () => null), /already/);
});
