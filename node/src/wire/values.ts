/**
 * `Value` (docs/protocol.md §8) to and from JavaScript, in one place.
 *
 * The mapping keeps every kind distinct, as §8.4.3 requires:
 *
 * | Kind   | JavaScript                                   |
 * |--------|----------------------------------------------|
 * | null   | `null`                                       |
 * | bool   | `boolean`                                    |
 * | int    | `bigint` (always, whatever its size)         |
 * | double | `number` (always, even when integral)        |
 * | string | `string`                                     |
 * | bytes  | `Uint8Array`                                 |
 * | tensor | {@link HostTensor}                           |
 * | list   | `Array`                                      |
 * | map    | `Map<string, JsValue>` (entry order kept)    |
 *
 * Integers are `bigint` rather than "a `number` when it is safe" because a JavaScript `number` cannot
 * say whether `2` was an int or a double: `echo(2)` must come back as the int it was sent as, and
 * `echo(2.0)` as a double. A plain object is accepted wherever a map is sent (its own enumerable string
 * keys, in property order), but received maps are always `Map`s, since object property order puts
 * integer-like keys first and would break §8.1.3.
 */
import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "./errors.js";
import {
  ListValueSchema,
  MapEntrySchema,
  MapValueSchema,
  Null,
  ValueSchema,
  type MapEntry as ProtoMapEntry,
  type Value as ProtoValue,
} from "./proto.js";
import { HostTensor, tensorFromProto, tensorToProto } from "./tensors.js";

/** A `Value` as JavaScript (see the module comment for the mapping). */
export type JsValue = null | boolean | bigint | number | string | Uint8Array | HostTensor | JsValue[] | JsMap;

/** A map value: string keys in wire order. */
export type JsMap = Map<string, JsValue>;

/** What {@link valueToProto} accepts: a {@link JsValue}, with plain objects allowed as maps. */
export type ValueInput =
  | null
  | boolean
  | bigint
  | number
  | string
  | Uint8Array
  | HostTensor
  | readonly ValueInput[]
  | ReadonlyMap<string, ValueInput>
  | { readonly [key: string]: ValueInput };

/** The kind names of §11.6.3 (`ParameterInfo.type` without `any`). */
export type ValueKind = "null" | "bool" | "int" | "double" | "string" | "bytes" | "tensor" | "list" | "map";

/** The deepest value a receiver accepts (§8.3.2). */
export const MAX_VALUE_DEPTH = 64;

/**
 * The deepest value this side sends (§8.3.6, §8.3.8). Every receiver accepts 32 levels (§8.3.5), and at 32
 * levels even a map of tensors fits, inside any envelope, within the 100 levels of message nesting that
 * conforming decoders allow (§3.3.7); a deeper value could reach the peer as a frame it cannot parse.
 */
export const MAX_SEND_DEPTH = 32;

/**
 * A value nested deeper than this side receives (§8.3.2) or sends (§8.3.6): INVALID_ARGUMENT with
 * `details.limit`. A class of its own so that a worker can tell a result too deep to send, which it
 * answers INVALID_ARGUMENT (§8.3.7), from a result that is no value at all (INTERNAL, §11.4.4).
 */
export class ValueTooDeepError extends InvalidArgumentError {
  constructor(what: string, limit: number) {
    super(`${what} is nested deeper than ${limit} levels (§8.3)`, { details: { limit: String(limit) } });
  }
}

/** The smallest and largest `int_value` (§8.1.1). */
export const INT64_MIN = -(2n ** 63n);
export const INT64_MAX = 2n ** 63n - 1n;

const KIND_BY_CASE: Readonly<Record<string, ValueKind>> = {
  nullValue: "null",
  boolValue: "bool",
  intValue: "int",
  doubleValue: "double",
  stringValue: "string",
  bytesValue: "bytes",
  tensorValue: "tensor",
  listValue: "list",
  mapValue: "map",
};

/** The kind of a `Value` message, or undefined when `kind` is unset. */
export function valueKind(value: ProtoValue): ValueKind | undefined {
  return value.kind.case === undefined ? undefined : KIND_BY_CASE[value.kind.case];
}

/**
 * Checks a received `Value` (§8.2, §8.3) without converting it: kind set at every depth, `MapEntry.value`
 * set, unique map keys, valid tensors, depth at most 64. Throws INVALID_ARGUMENT; `level` is the depth of
 * `value` itself (1 at the top).
 */
export function validateValue(value: ProtoValue, what = "value", level = 1): void {
  valueFromProto(value, what, level);
}

/** A received `Value` as JavaScript, validated as {@link validateValue} says. */
export function valueFromProto(value: ProtoValue, what = "value", level = 1): JsValue {
  if (level > MAX_VALUE_DEPTH) throw new ValueTooDeepError(what, MAX_VALUE_DEPTH);
  const kind = value.kind;
  switch (kind.case) {
    case "nullValue":
      return null;
    case "boolValue":
      return kind.value;
    case "intValue":
      return kind.value;
    case "doubleValue":
      return kind.value;
    case "stringValue":
      return kind.value;
    case "bytesValue":
      return kind.value;
    case "tensorValue":
      return tensorFromProto(kind.value, what);
    case "listValue":
      return kind.value.items.map((item, i) => valueFromProto(item, `${what}[${i}]`, level + 1));
    case "mapValue":
      return mapEntriesFromProto(kind.value.entries, what, level + 1);
    case undefined:
      throw new InvalidArgumentError(`${what} has no kind set (§8.2.1)`);
    default:
      throw new InvalidArgumentError(`${what} has an unknown kind`);
  }
}

/**
 * `MapEntry` messages (a `MapValue`'s entries, `CallRequest.kwargs`) as an ordered `Map`; duplicate keys
 * (§8.2.2) and unset values (§8.1.4) throw INVALID_ARGUMENT. `level` is the depth of the values.
 */
export function mapEntriesFromProto(entries: readonly ProtoMapEntry[], what = "map", level = 1): JsMap {
  const out: JsMap = new Map();
  for (const entry of entries) {
    if (out.has(entry.key)) {
      throw new InvalidArgumentError(`${what} has the key ${JSON.stringify(entry.key)} twice (§8.2.2)`);
    }
    if (entry.value === undefined) {
      throw new InvalidArgumentError(`${what}[${JSON.stringify(entry.key)}] has no value (§8.1.4)`);
    }
    out.set(entry.key, valueFromProto(entry.value, `${what}[${JSON.stringify(entry.key)}]`, level));
  }
  return out;
}

/**
 * A JavaScript value as a `Value` message. Throws INVALID_ARGUMENT for what cannot be sent: `undefined`,
 * functions, symbols, a `bigint` outside the signed 64-bit range (§8.4.2), cyclic containers, and values
 * deeper than 32 levels ({@link ValueTooDeepError}, §8.3.6, §8.3.8).
 */
export function valueToProto(input: ValueInput, what = "value"): ProtoValue {
  return toProto(input, what, 1, new Set());
}

/** Ordered key/value pairs (a `Map` or a plain object) as `MapEntry` messages. */
export function mapEntriesToProto(
  input: ReadonlyMap<string, ValueInput> | { readonly [key: string]: ValueInput },
  what = "map",
): ProtoMapEntry[] {
  return entriesToProto(input, what, 1, new Set());
}

function toProto(input: ValueInput, what: string, level: number, seen: Set<object>): ProtoValue {
  if (level > MAX_SEND_DEPTH) throw new ValueTooDeepError(what, MAX_SEND_DEPTH);
  if (input === null) {
    return create(ValueSchema, { kind: { case: "nullValue", value: Null.VALUE } });
  }
  switch (typeof input) {
    case "boolean":
      return create(ValueSchema, { kind: { case: "boolValue", value: input } });
    case "bigint":
      if (input < INT64_MIN || input > INT64_MAX) {
        throw new InvalidArgumentError(`${what}: integer ${input} is outside the signed 64-bit range (§8.4.2)`);
      }
      return create(ValueSchema, { kind: { case: "intValue", value: input } });
    case "number":
      return create(ValueSchema, { kind: { case: "doubleValue", value: input } });
    case "string":
      return create(ValueSchema, { kind: { case: "stringValue", value: input } });
    case "object":
      break;
    default:
      throw new InvalidArgumentError(`${what}: a ${typeof input} cannot be sent as a Value`);
  }
  if (input instanceof Uint8Array) {
    return create(ValueSchema, { kind: { case: "bytesValue", value: input } });
  }
  if (input instanceof HostTensor) {
    return create(ValueSchema, { kind: { case: "tensorValue", value: tensorToProto(input) } });
  }
  if (seen.has(input)) {
    throw new InvalidArgumentError(`${what} contains itself`);
  }
  seen.add(input);
  try {
    if (Array.isArray(input)) {
      const items = (input as readonly ValueInput[]).map((item, i) => toProto(item, `${what}[${i}]`, level + 1, seen));
      return create(ValueSchema, { kind: { case: "listValue", value: create(ListValueSchema, { items }) } });
    }
    if (ArrayBuffer.isView(input)) {
      throw new InvalidArgumentError(`${what}: a ${input.constructor.name} cannot be sent; use a Uint8Array or a tensor`);
    }
    const prototype = Object.getPrototypeOf(input) as unknown;
    if (!(input instanceof Map) && prototype !== Object.prototype && prototype !== null) {
      throw new InvalidArgumentError(`${what}: a ${(input as object).constructor.name} cannot be sent as a Value`);
    }
    const entries = entriesToProto(input as ReadonlyMap<string, ValueInput>, what, level + 1, seen);
    return create(ValueSchema, { kind: { case: "mapValue", value: create(MapValueSchema, { entries }) } });
  } finally {
    seen.delete(input);
  }
}

function entriesToProto(
  input: ReadonlyMap<string, ValueInput> | { readonly [key: string]: ValueInput },
  what: string,
  level: number,
  seen: Set<object>,
): ProtoMapEntry[] {
  const pairs: [unknown, ValueInput][] =
    input instanceof Map ? [...(input as ReadonlyMap<unknown, ValueInput>).entries()] : Object.entries(input);
  return pairs.map(([key, value]) => {
    if (typeof key !== "string") {
      throw new InvalidArgumentError(`${what}: map key ${String(key)} is not a string (§8.4.2)`);
    }
    return create(MapEntrySchema, { key, value: toProto(value, `${what}[${JSON.stringify(key)}]`, level, seen) });
  });
}

/** The kind {@link valueToProto} would give a JavaScript value (no validation of containers). */
export function jsValueKind(value: JsValue): ValueKind {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return "bool";
    case "bigint":
      return "int";
    case "number":
      return "double";
    case "string":
      return "string";
    default:
      break;
  }
  if (value instanceof Uint8Array) return "bytes";
  if (value instanceof HostTensor) return "tensor";
  if (Array.isArray(value)) return "list";
  return "map";
}
