/**
 * Limits (docs/protocol.md §14): the values a server advertises in `Welcome.limits` and enforces.
 */
import { create } from "@bufbuild/protobuf";
import { LimitsSchema, type Limits as ProtoLimits } from "./proto.js";

/** The limits of one server, as numbers (0 means "no limit" except where §14.1.1 says otherwise). */
export interface Limits {
  /** The largest frame the server accepts (never 0). */
  maxFrameBytes: number;
  /** The most requests in flight per connection (never 0). */
  maxInFlight: number;
  /** The data size of each chunk the server sends, and the most it accepts (never 0). */
  chunkBytes: number;
  /** The most tensor bytes one identity may keep stored. */
  maxObjectBytes: number;
  /** The most bytes of one call's encoded arguments. */
  maxCallArgsBytes: number;
  /** Seconds without a client frame before the server closes the connection (0: never). */
  idleTimeoutSeconds: number;
  /** Seconds the server waits for Hello (0: forever). */
  handshakeTimeoutSeconds: number;
  /** The most bytes of a TorchScript model or loss. */
  maxModelBytes: number;
}

const MiB = 1024 * 1024;

/** Defaults for a general-purpose server (the reference defaults of §14.1). */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  maxFrameBytes: 64 * MiB,
  maxInFlight: 128,
  chunkBytes: 256 * 1024,
  maxObjectBytes: 4 * 1024 * MiB,
  maxCallArgsBytes: 16 * MiB,
  idleTimeoutSeconds: 300,
  handshakeTimeoutSeconds: 10,
  maxModelBytes: 64 * MiB,
});

/** The limits of the conformance profile (§18.4.1). */
export const CONFORMANCE_LIMITS: Readonly<Limits> = Object.freeze({
  ...DEFAULT_LIMITS,
  maxFrameBytes: 4 * MiB,
  chunkBytes: 256 * 1024,
  maxInFlight: 32,
  maxObjectBytes: 64 * MiB,
  maxCallArgsBytes: 1 * MiB,
  maxModelBytes: 4 * MiB,
});

/** The overhead a chunk envelope may need beyond its data (§7.3.25). */
export const CHUNK_ENVELOPE_OVERHEAD = 64;

/**
 * Checks that limits can be advertised: positive `maxFrameBytes`, `maxInFlight` and `chunkBytes`
 * (§14.1.1), `chunkBytes + 64 <= maxFrameBytes` (§7.3.25), non-negative integers elsewhere. Throws a
 * RangeError naming the first problem.
 */
export function validateLimits(limits: Limits): void {
  for (const [name, value] of Object.entries(limits)) {
    const integral = !name.endsWith("Seconds");
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (integral && !Number.isSafeInteger(value))) {
      throw new RangeError(`limit ${name} must be a non-negative ${integral ? "integer" : "number"}, not ${value}`);
    }
  }
  for (const name of ["maxFrameBytes", "maxInFlight", "chunkBytes"] as const) {
    if (limits[name] === 0) {
      throw new RangeError(`limit ${name} must not be 0 (§14.1.1)`);
    }
  }
  if (limits.maxInFlight > 0xffffffff) {
    throw new RangeError("limit maxInFlight must fit in 32 bits");
  }
  if (limits.chunkBytes + CHUNK_ENVELOPE_OVERHEAD > limits.maxFrameBytes) {
    throw new RangeError(`chunkBytes + ${CHUNK_ENVELOPE_OVERHEAD} must be <= maxFrameBytes (§7.3.25)`);
  }
}

/** Limits as the `Limits` message of the Welcome. */
export function limitsToProto(limits: Limits): ProtoLimits {
  return create(LimitsSchema, {
    maxFrameBytes: BigInt(limits.maxFrameBytes),
    maxInFlight: limits.maxInFlight,
    chunkBytes: BigInt(limits.chunkBytes),
    maxObjectBytes: BigInt(limits.maxObjectBytes),
    maxCallArgsBytes: BigInt(limits.maxCallArgsBytes),
    idleTimeoutSeconds: limits.idleTimeoutSeconds,
    handshakeTimeoutSeconds: limits.handshakeTimeoutSeconds,
    maxModelBytes: BigInt(limits.maxModelBytes),
  });
}

/** A received `Limits` message as numbers (values beyond 2^53 are clamped to `Number.MAX_SAFE_INTEGER`). */
export function limitsFromProto(limits: ProtoLimits): Limits {
  const n = (v: bigint): number => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));
  return {
    maxFrameBytes: n(limits.maxFrameBytes),
    maxInFlight: limits.maxInFlight,
    chunkBytes: n(limits.chunkBytes),
    maxObjectBytes: n(limits.maxObjectBytes),
    maxCallArgsBytes: n(limits.maxCallArgsBytes),
    idleTimeoutSeconds: limits.idleTimeoutSeconds,
    handshakeTimeoutSeconds: limits.handshakeTimeoutSeconds,
    maxModelBytes: n(limits.maxModelBytes),
  };
}
