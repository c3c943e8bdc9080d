import { test } from "node:test";
import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  INT64_MAX,
  INT64_MIN,
  MAX_SEND_DEPTH,
  MAX_VALUE_DEPTH,
  ValueTooDeepError,
  jsValueKind,
  mapEntriesFromProto,
  mapEntriesToProto,
  valueFromProto,
  valueKind,
  valueToProto,
  type JsValue,
  type ValueInput,
} from "../../src/wire/values.js";
import { InvalidArgumentError } from "../../src/wire/errors.js";
import { HostTensor } from "../../src/wire/tensors.js";
import { DType, ListValueSchema, MapEntrySchema, MapValueSchema, ValueSchema } from "../../src/wire/proto.js";

function roundTrip(input: ValueInput): JsValue {
  const wire = toBinary(ValueSchema, valueToProto(input));
  return valueFromProto(fromBinary(ValueSchema, wire));
}

test("scalars keep their kind: bigint is int, number is double (§8.4.3)", () => {
  assert.equal(roundTrip(null), null);
  assert.equal(roundTrip(true), true);
  assert.equal(roundTrip(2n), 2n);
  assert.equal(roundTrip(2), 2);
  assert.equal(typeof roundTrip(2), "number");
  assert.equal(typeof roundTrip(2n), "bigint");
  assert.equal(valueKind(valueToProto(2)), "double");
  assert.equal(valueKind(valueToProto(2n)), "int");
  assert.equal(roundTrip(INT64_MIN), INT64_MIN);
  assert.equal(roundTrip(INT64_MAX), INT64_MAX);
  assert.ok(Number.isNaN(roundTrip(Number.NaN) as number));
  assert.equal(roundTrip(-Infinity), -Infinity);
  assert.ok(Object.is(roundTrip(-0), -0));
  assert.equal(roundTrip("héllo ✓"), "héllo ✓");
  assert.deepEqual(roundTrip(Uint8Array.from([0, 255])), Uint8Array.from([0, 255]));
});

test("containers keep order, including integer-like map keys (§8.1.3)", () => {
  const map = new Map<string, ValueInput>([
    ["b", 1n],
    ["2", [1.5, "x", null]],
    ["a", new Map([["inner", false]])],
  ]);
  const back = roundTrip(map) as Map<string, JsValue>;
  assert.deepEqual([...back.keys()], ["b", "2", "a"]);
  assert.deepEqual(back.get("2"), [1.5, "x", null]);
  assert.deepEqual(roundTrip({ z: 1n, y: 2 }), new Map<string, JsValue>([["z", 1n], ["y", 2]]));
  assert.deepEqual(roundTrip([]), []);
  assert.deepEqual(roundTrip(new Map()), new Map());
});

test("tensors travel as tensor values", () => {
  const t = HostTensor.create(DType.DTYPE_INT16, [2], Uint8Array.from([1, 0, 255, 255]));
  const back = roundTrip([t]) as JsValue[];
  assert.ok(back[0] instanceof HostTensor);
  assert.deepEqual((back[0] as HostTensor).data, t.data);
  assert.equal(jsValueKind(t), "tensor");
});

test("what cannot be sent is INVALID_ARGUMENT (§8.4.2)", () => {
  assert.throws(() => valueToProto(INT64_MAX + 1n), InvalidArgumentError);
  assert.throws(() => valueToProto(INT64_MIN - 1n), InvalidArgumentError);
  assert.throws(() => valueToProto(undefined as unknown as ValueInput), InvalidArgumentError);
  assert.throws(() => valueToProto(new Date() as unknown as ValueInput), InvalidArgumentError);
  assert.throws(() => valueToProto(new Float32Array(2) as unknown as ValueInput), InvalidArgumentError);
  const cyclic: ValueInput[] = [];
  cyclic.push(cyclic);
  assert.throws(() => valueToProto(cyclic), /contains itself/);
});

function nested(depth: number): ReturnType<typeof valueToProto> {
  let value = create(ValueSchema, { kind: { case: "boolValue", value: true } });
  for (let i = 1; i < depth; i++) {
    value = create(ValueSchema, { kind: { case: "listValue", value: create(ListValueSchema, { items: [value] }) } });
  }
  return value;
}

test("depth 64 is accepted, 65 rejected (§8.3.2)", () => {
  assert.doesNotThrow(() => valueFromProto(nested(MAX_VALUE_DEPTH)));
  assert.throws(
    () => valueFromProto(nested(MAX_VALUE_DEPTH + 1)),
    (err: unknown) => err instanceof ValueTooDeepError && err instanceof InvalidArgumentError && err.details.limit === "64",
  );
});

test("at most 32 levels are sent, a deeper value or a cycle is INVALID_ARGUMENT (§8.3.6, §8.3.8)", () => {
  let deep: ValueInput = 1n;
  for (let i = 1; i < MAX_SEND_DEPTH; i++) deep = new Map([["k", deep]]);
  assert.deepEqual(valueFromProto(valueToProto(deep)), deep);
  assert.throws(() => valueToProto([deep]), (err: unknown) => err instanceof ValueTooDeepError && err.details.limit === "32");
  assert.throws(() => mapEntriesToProto({ k: [deep] }), ValueTooDeepError);
});

test("received values: unset kind, duplicate keys, unset entry value, bad tensor are INVALID_ARGUMENT (§8.2)", () => {
  assert.throws(() => valueFromProto(create(ValueSchema, {})), /no kind/);
  const inner = create(ValueSchema, {
    kind: { case: "listValue", value: create(ListValueSchema, { items: [create(ValueSchema, {})] }) },
  });
  assert.throws(() => valueFromProto(inner), /no kind/);
  const one = create(ValueSchema, { kind: { case: "intValue", value: 1n } });
  const dup = create(ValueSchema, {
    kind: {
      case: "mapValue",
      value: create(MapValueSchema, {
        entries: [create(MapEntrySchema, { key: "k", value: one }), create(MapEntrySchema, { key: "k", value: one })],
      }),
    },
  });
  assert.throws(() => valueFromProto(dup), /twice/);
  assert.throws(() => mapEntriesFromProto([create(MapEntrySchema, { key: "k" })]), /no value/);
  const badTensor = create(ValueSchema, {
    kind: { case: "tensorValue", value: { $typeName: "fedproto.v1.Tensor", dtype: DType.DTYPE_BOOL, shape: [], data: Uint8Array.from([7]) } },
  });
  assert.throws(() => valueFromProto(badTensor), InvalidArgumentError);
});
