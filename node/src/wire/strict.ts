/**
 * A strict check of the protobuf wire format, run before `@bufbuild/protobuf` decodes a frame.
 *
 * protobuf-es decodes known fields by their declared type without looking at the wire type, and lets a
 * field run past the end of its enclosing message. The protobuf wire format (and the reference decoders,
 * upb and C++) treat both differently, and §3.3 depends on it: a frame is "undecodable" exactly when a
 * conforming decoder rejects it. This module walks a frame with the message descriptors and:
 *
 * - rejects what conforming decoders reject: truncated data, a field overrunning its message, a varint of
 *   more than 10 bytes, field number 0, wire types 6 and 7, an end-group tag without its start, packed
 *   data that does not split into whole elements, nesting deeper than 100 messages;
 * - reports known fields sent with another wire type, which conforming decoders keep as unknown fields
 *   (so a body member with the wrong wire type leaves the body unset, §3.6.1), and can rewrite the frame
 *   without them so that protobuf-es sees what a conforming decoder sees.
 */
import { ScalarType, type DescField, type DescMessage } from "@bufbuild/protobuf";

/** Wire types (protobuf encoding). */
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

/** The nesting depth conforming decoders allow (§8.3.4). */
export const MAX_MESSAGE_DEPTH = 100;

/** A wire-format violation; the message says where. */
export class WireFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireFormatError";
  }
}

type FieldSpec =
  | { readonly kind: "scalar"; readonly wire: number; readonly packable: false }
  | { readonly kind: "packed"; readonly wire: number; readonly packable: true }
  | { readonly kind: "message"; readonly message: () => MessageSpec }
  | { readonly kind: "map"; readonly entry: () => MessageSpec };

type MessageSpec = ReadonlyMap<number, FieldSpec>;

function scalarWire(type: ScalarType): number {
  switch (type) {
    case ScalarType.DOUBLE:
    case ScalarType.FIXED64:
    case ScalarType.SFIXED64:
      return I64;
    case ScalarType.FLOAT:
    case ScalarType.FIXED32:
    case ScalarType.SFIXED32:
      return I32;
    case ScalarType.STRING:
    case ScalarType.BYTES:
      return LEN;
    default:
      return VARINT;
  }
}

const specs = new WeakMap<DescMessage, MessageSpec>();

function specOf(desc: DescMessage): MessageSpec {
  let spec = specs.get(desc);
  if (spec === undefined) {
    const fields = new Map<number, FieldSpec>();
    spec = fields;
    specs.set(desc, spec);
    for (const field of desc.fields) fields.set(field.number, fieldSpec(field));
  }
  return spec;
}

function fieldSpec(field: DescField): FieldSpec {
  switch (field.fieldKind) {
    case "scalar":
      return { kind: "scalar", wire: scalarWire(field.scalar), packable: false };
    case "enum":
      return { kind: "scalar", wire: VARINT, packable: false };
    case "message": {
      const message = field.message;
      return { kind: "message", message: () => specOf(message) };
    }
    case "list": {
      if (field.listKind === "message") {
        const message = field.message;
        return { kind: "message", message: () => specOf(message) };
      }
      const wire = field.listKind === "enum" ? VARINT : scalarWire(field.scalar);
      return wire === LEN ? { kind: "scalar", wire, packable: false } : { kind: "packed", wire, packable: true };
    }
    case "map": {
      const key: FieldSpec = { kind: "scalar", wire: scalarWire(field.mapKey), packable: false };
      let value: FieldSpec;
      if (field.mapKind === "message") {
        const message = field.message;
        value = { kind: "message", message: () => specOf(message) };
      } else if (field.mapKind === "enum") {
        value = { kind: "scalar", wire: VARINT, packable: false };
      } else {
        value = { kind: "scalar", wire: scalarWire(field.scalar), packable: false };
      }
      const entry: MessageSpec = new Map([
        [1, key],
        [2, value],
      ]);
      return { kind: "map", entry: () => entry };
    }
  }
}

function accepts(spec: FieldSpec, wire: number): boolean {
  switch (spec.kind) {
    case "scalar":
      return wire === spec.wire;
    case "packed":
      return wire === spec.wire || wire === LEN;
    default:
      return wire === LEN;
  }
}

/** Reads a varint at `pos` (at most 10 bytes); returns [value, next position]. */
function readVarint(buf: Uint8Array, pos: number, end: number): [bigint, number] {
  // Fast path: tags and lengths are almost always at most 4 bytes (28 bits), exact in a Number.
  let small = 0;
  for (let i = 0; i < 4 && pos + i < end; i++) {
    const byte = buf[pos + i]!;
    small += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) return [BigInt(small), pos + i + 1];
  }
  let value = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new WireFormatError("truncated varint");
    const byte = buf[pos++]!;
    value |= BigInt(byte & 0x7f) << BigInt(7 * i);
    if ((byte & 0x80) === 0) return [value & 0xffffffffffffffffn, pos];
  }
  throw new WireFormatError("varint longer than 10 bytes");
}

function skipVarint(buf: Uint8Array, pos: number, end: number): number {
  for (let i = 0; i < 10; i++) {
    if (pos >= end) throw new WireFormatError("truncated varint");
    if ((buf[pos++]! & 0x80) === 0) return pos;
  }
  throw new WireFormatError("varint longer than 10 bytes");
}

function readLength(buf: Uint8Array, pos: number, end: number): [number, number] {
  const [length, next] = readVarint(buf, pos, end);
  if (length > BigInt(end - next)) throw new WireFormatError("length-delimited field runs past its message");
  return [Number(length), next];
}

interface Tag {
  readonly field: number;
  readonly wire: number;
  readonly next: number;
}

function readTag(buf: Uint8Array, pos: number, end: number): Tag {
  const [tag, next] = readVarint(buf, pos, end);
  if (tag > 0xffffffffn) throw new WireFormatError("tag out of range");
  const field = Number(tag >> 3n);
  const wire = Number(tag & 7n);
  if (field === 0) throw new WireFormatError("field number 0");
  if (wire > 5) throw new WireFormatError(`invalid wire type ${wire}`);
  return { field, wire, next };
}

/** Skips one field's value (after its tag); groups are skipped to their matching end tag. */
function skipValue(buf: Uint8Array, tag: Tag, end: number, depth: number): number {
  switch (tag.wire) {
    case VARINT:
      return skipVarint(buf, tag.next, end);
    case I64:
      if (tag.next + 8 > end) throw new WireFormatError("truncated fixed64");
      return tag.next + 8;
    case I32:
      if (tag.next + 4 > end) throw new WireFormatError("truncated fixed32");
      return tag.next + 4;
    case LEN: {
      const [length, next] = readLength(buf, tag.next, end);
      return next + length;
    }
    case SGROUP: {
      if (depth >= MAX_MESSAGE_DEPTH) throw new WireFormatError("nesting too deep");
      let pos = tag.next;
      // Each step moves past at least one byte, so the loop ends.
      while (pos < end) {
        const inner = readTag(buf, pos, end);
        if (inner.wire === EGROUP) {
          if (inner.field !== tag.field) throw new WireFormatError("mismatched end-group tag");
          return inner.next;
        }
        pos = skipValue(buf, inner, end, depth + 1);
      }
      throw new WireFormatError("unterminated group");
    }
    default:
      throw new WireFormatError("end-group tag without a start");
  }
}

function checkPacked(buf: Uint8Array, start: number, end: number, wire: number): void {
  if (wire === I64 || wire === I32) {
    if ((end - start) % (wire === I64 ? 8 : 4) !== 0) throw new WireFormatError("packed field of partial elements");
    return;
  }
  let pos = start;
  while (pos < end) pos = skipVarint(buf, pos, end);
}

/** What a walk found. */
export interface WireScan {
  /** Some known field (at any depth) came with another wire type than its declared one. */
  readonly mismatched: boolean;
  /** The top-level fields a conforming decoder keeps as unknown (unknown numbers and mismatched wire types). */
  readonly topLevelUnknown: number;
}

interface WalkState {
  mismatched: boolean;
  topLevelUnknown: number;
}

/**
 * Walks one message's bytes; with `out`, also writes them without the mismatched known fields (rewriting
 * the lengths of the messages that held them).
 */
function walk(buf: Uint8Array, start: number, end: number, spec: MessageSpec, depth: number, state: WalkState, out: Uint8Array[] | null): void {
  if (depth > MAX_MESSAGE_DEPTH) throw new WireFormatError("nesting too deep");
  let pos = start;
  while (pos < end) {
    const tag = readTag(buf, pos, end);
    const field = spec.get(tag.field);
    if (field === undefined || !accepts(field, tag.wire)) {
      if (field !== undefined) state.mismatched = true;
      if (depth === 1) state.topLevelUnknown++;
      const next = skipValue(buf, tag, end, depth);
      if (out !== null && field === undefined) out.push(buf.subarray(pos, next));
      pos = next;
      continue;
    }
    if (tag.wire !== LEN || field.kind === "scalar") {
      const next = skipValue(buf, tag, end, depth);
      out?.push(buf.subarray(pos, next));
      pos = next;
      continue;
    }
    const [length, bodyStart] = readLength(buf, tag.next, end);
    const bodyEnd = bodyStart + length;
    if (field.kind === "packed") {
      checkPacked(buf, bodyStart, bodyEnd, field.wire);
      out?.push(buf.subarray(pos, bodyEnd));
    } else {
      const inner = field.kind === "message" ? field.message() : field.entry();
      if (out === null) {
        walk(buf, bodyStart, bodyEnd, inner, depth + 1, state, null);
      } else {
        const pieces: Uint8Array[] = [];
        walk(buf, bodyStart, bodyEnd, inner, depth + 1, state, pieces);
        const size = pieces.reduce((n, p) => n + p.length, 0);
        out.push(buf.subarray(pos, tag.next), encodeVarint(size), ...pieces);
      }
    }
    pos = bodyEnd;
  }
}

function encodeVarint(value: number): Uint8Array {
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return Uint8Array.from(bytes);
}

/** Checks `bytes` as an encoded `desc` message; throws {@link WireFormatError} where conforming decoders fail. */
export function scanWireFormat(bytes: Uint8Array, desc: DescMessage): WireScan {
  const state: WalkState = { mismatched: false, topLevelUnknown: 0 };
  walk(bytes, 0, bytes.length, specOf(desc), 1, state, null);
  return state;
}

/** `bytes` without the known fields whose wire type differs from the declared one (call after a scan). */
export function dropMismatchedFields(bytes: Uint8Array, desc: DescMessage): Uint8Array {
  const pieces: Uint8Array[] = [];
  walk(bytes, 0, bytes.length, specOf(desc), 1, { mismatched: false, topLevelUnknown: 0 }, pieces);
  const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const piece of pieces) {
    out.set(piece, offset);
    offset += piece.length;
  }
  return out;
}
