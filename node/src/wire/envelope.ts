/**
 * Framing (docs/protocol.md §3): one binary WebSocket message carries exactly one `Envelope`. Encoding,
 * decoding, the tables of §19 (which bodies are requests, their replies and capabilities, which are
 * server-only) and the size arithmetic the frame limits need.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { MalformedError } from "./errors.js";
import { MAX_MESSAGE_DEPTH, dropMismatchedFields, scanWireFormat } from "./strict.js";
import {
  CallRequestSchema,
  ChunkSchema,
  EnvelopeSchema,
  type CallRequest as ProtoCallRequest,
  type Chunk as ProtoChunk,
  type Envelope as ProtoEnvelope,
} from "./proto.js";

/** The `Envelope.body` union. */
export type Body = ProtoEnvelope["body"];

/** The name of a body member (`"hello"`, `"sendObject"`, ...; the camelCase of the `.proto` field). */
export type BodyCase = NonNullable<Body["case"]>;

/** The body whose member is `C`. */
export type BodyOf<C extends BodyCase> = Extract<Body, { case: C }>;

/** The capabilities of §4.3.1. */
export type Capability =
  | "objects"
  | "chunked"
  | "datasets"
  | "calls"
  | "training"
  | "notifications"
  | "deadlines"
  | "conformance";

/** The capabilities in the order §4.3.1 lists them. */
export const CAPABILITIES: readonly Capability[] = [
  "objects",
  "chunked",
  "datasets",
  "calls",
  "training",
  "notifications",
  "deadlines",
  "conformance",
];

/** What §19.1 says about one request body. */
export interface RequestKind {
  /** The body of its terminal reply. */
  readonly reply: BodyCase;
  /** The capability it needs, if any. */
  readonly capability: Capability | undefined;
}

/** Every request body of §19.1 with its reply and capability. */
export const REQUEST_KINDS: ReadonlyMap<BodyCase, RequestKind> = new Map<BodyCase, RequestKind>([
  ["hello", { reply: "welcome", capability: undefined }],
  ["ping", { reply: "pong", capability: undefined }],
  ["sendObject", { reply: "sendObjectReply", capability: "objects" }],
  ["getObject", { reply: "getObjectReply", capability: "objects" }],
  ["deleteObject", { reply: "deleteObjectReply", capability: "objects" }],
  ["listObjects", { reply: "listObjectsReply", capability: "objects" }],
  ["countObjects", { reply: "countObjectsReply", capability: "objects" }],
  ["clearObjects", { reply: "clearObjectsReply", capability: "objects" }],
  ["searchObjects", { reply: "searchObjectsReply", capability: "objects" }],
  ["listDatasets", { reply: "listDatasetsReply", capability: "datasets" }],
  ["call", { reply: "callReply", capability: "calls" }],
  ["listMethods", { reply: "listMethodsReply", capability: "calls" }],
  ["setTrainConfig", { reply: "setTrainConfigReply", capability: "training" }],
  ["fit", { reply: "fitReply", capability: "training" }],
  ["evaluate", { reply: "evaluateReply", capability: "training" }],
  ["getWeights", { reply: "getWeightsReply", capability: "training" }],
  ["setWeights", { reply: "setWeightsReply", capability: "training" }],
  ["listModels", { reply: "listModelsReply", capability: "training" }],
]);

/** Client-to-server bodies that are not requests (§19.2). */
export const CONTROL_BODIES: ReadonlySet<BodyCase> = new Set<BodyCase>(["cancel", "goodbye", "chunk"]);

/**
 * Bodies only servers send (§19.3, §3.7.1): `welcome`, `pong`, `notification`, `error`, `fit_progress`,
 * `weights_manifest`, `*_reply`.
 */
export const SERVER_ONLY_BODIES: ReadonlySet<BodyCase> = new Set<BodyCase>([
  "welcome",
  "pong",
  "notification",
  "error",
  "fitProgress",
  "weightsManifest",
  ...[...REQUEST_KINDS.values()].map((kind) => kind.reply).filter((reply) => reply.endsWith("Reply")),
]);

/** The `.proto` (snake_case) name of a body, as the spec writes it (`send_object`). */
export function bodyName(body: BodyCase | undefined): string {
  return body === undefined ? "(none)" : body.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** True when `body` is a request body of §19.1. */
export function isRequestBody(body: BodyCase | undefined): boolean {
  return body !== undefined && REQUEST_KINDS.has(body);
}

/** An envelope with the given request id, body and (for requests) deadline. */
export function makeEnvelope(requestId: bigint, body: Body, deadlineMs = 0n): ProtoEnvelope {
  return create(EnvelopeSchema, { requestId, deadlineMs, body });
}

/** The bytes of one frame: the envelope in protobuf binary encoding, nothing else (§3.1.1). */
export function encodeEnvelope(envelope: ProtoEnvelope): Uint8Array {
  return toBinary(EnvelopeSchema, envelope);
}

/**
 * One frame's bytes as an envelope, keeping unknown fields (a newer body kind decodes as no body plus
 * unknown fields, §3.6.1). Anything the decoder rejects (truncated data, bad wire types, invalid UTF-8 in
 * a string, nesting deeper than 100 messages) throws {@link MalformedError} (§3.3.4).
 */
export function decodeEnvelope(frame: Uint8Array): ProtoEnvelope {
  try {
    // protobuf-es alone is laxer than conforming decoders (see strict.ts); the scan makes it agree.
    const scan = scanWireFormat(frame, EnvelopeSchema);
    const bytes = scan.mismatched ? dropMismatchedFields(frame, EnvelopeSchema) : frame;
    const envelope = fromBinary(EnvelopeSchema, bytes, { readUnknownFields: true, recursionLimit: MAX_MESSAGE_DEPTH });
    if (scan.topLevelUnknown > 0) unknownTopLevel.add(envelope);
    return envelope;
  } catch (err) {
    throw new MalformedError(`the frame does not parse as an Envelope: ${(err as Error).message}`, { cause: err });
  }
}

// Envelopes that arrived with top-level fields a conforming decoder keeps as unknown, including known
// fields sent with another wire type (which protobuf-es never sees, as they are dropped before it decodes).
const unknownTopLevel = new WeakSet<ProtoEnvelope>();

/** True when a decoded envelope carried top-level fields this schema does not know (§3.6.1). */
export function hasUnknownFields(envelope: ProtoEnvelope): boolean {
  if (unknownTopLevel.has(envelope)) return true;
  const unknown = (envelope as { $unknown?: unknown[] }).$unknown;
  return unknown !== undefined && unknown.length > 0;
}

/** The number of bytes of `value` as a protobuf varint. */
export function varintSize(value: number | bigint): number {
  let v = BigInt(value);
  let size = 1;
  while (v >= 0x80n) {
    v >>= 7n;
    size++;
  }
  return size;
}

/** The encoded size of an envelope, in bytes. */
export function envelopeSize(envelope: ProtoEnvelope): number {
  return encodeEnvelope(envelope).length;
}

/**
 * The encoded size of a chunk envelope carrying `dataBytes` bytes at `offset` of a `totalBytes` payload,
 * computed without building it (field 18 of Envelope, fields 1-3 of Chunk; no digest).
 */
export function chunkEnvelopeSize(requestId: bigint, offset: number, dataBytes: number, totalBytes: number): number {
  let chunk = 0;
  if (offset > 0) chunk += 1 + varintSize(offset);
  if (dataBytes > 0) chunk += 1 + varintSize(dataBytes) + dataBytes;
  if (totalBytes > 0) chunk += 1 + varintSize(totalBytes);
  let envelope = 2 + varintSize(chunk) + chunk; // tag of field 18 takes two bytes
  if (requestId !== 0n) envelope += 1 + varintSize(requestId);
  return envelope;
}

/**
 * The most data bytes one chunk of a `totalBytes` payload may carry so that every chunk envelope of the
 * transfer fits in `frameLimit` bytes, capped at `chunkBytes` (§7.3.19). Returns 0 when not even one data
 * byte fits.
 */
export function maxChunkDataBytes(frameLimit: number, chunkBytes: number, requestId: bigint, totalBytes: number): number {
  let n = Math.min(chunkBytes, totalBytes);
  // The largest offset is below totalBytes; sizing with offset = totalBytes bounds every chunk.
  while (n > 0 && chunkEnvelopeSize(requestId, totalBytes, n, totalBytes) > frameLimit) {
    const over = chunkEnvelopeSize(requestId, totalBytes, n, totalBytes) - frameLimit;
    n = Math.max(0, n - Math.max(1, over));
  }
  return n;
}

/** The size of a call's arguments: its `CallRequest` encoded with `method` cleared (§11.3.1). */
export function callArgsSize(call: ProtoCallRequest): number {
  return toBinary(CallRequestSchema, create(CallRequestSchema, { args: call.args, kwargs: call.kwargs })).length;
}

/** A `Chunk` message (for tests and size checks). */
export function chunkMessage(init: Partial<Pick<ProtoChunk, "offset" | "data" | "totalBytes" | "sha256">>): ProtoChunk {
  return create(ChunkSchema, init);
}
