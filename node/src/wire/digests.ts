/**
 * Payload digests negotiated per connection (docs/protocol.md §7.5): the algorithm names, the server's
 * choice, which field carries a digest under which algorithm, and the hashers of a transfer.
 *
 * `sha256` is mandatory (§7.5.2) and comes from node:crypto; `xxh3-128` comes from `@node-rs/xxhash`.
 * That package hashes XXH3-128 in one call over a whole buffer (its streaming state gives only 64-bit
 * XXH3), so an XXH3 hasher here hashes the assembled payload once at the end instead of piece by piece;
 * either way each side hashes a payload once (§7.5.11).
 */
import { createHash, type Hash } from "node:crypto";
import { createRequire } from "node:module";

/** The algorithm names of §7.5.1. */
export const SHA256 = "sha256";
export const XXH3_128 = "xxh3-128";

/** Digest length in bytes of each algorithm implemented here (§7.5.1). */
export const DIGEST_SIZES: ReadonlyMap<string, number> = new Map([
  [SHA256, 32],
  [XXH3_128, 16],
]);

/** What this implementation's client offers, fastest first, `sha256` last (§7.5.3). */
export const PREFERRED_DIGESTS: readonly string[] = Object.freeze([XXH3_128, SHA256]);

interface XxhashModule {
  xxh3: { xxh128(input: Uint8Array): bigint };
}
// A native CommonJS package; loaded through require so its prebuilt binary is picked as usual.
const xxhash = createRequire(import.meta.url)("@node-rs/xxhash") as XxhashModule;

/** Whether `name` is an algorithm this implementation computes. */
export function isImplementedDigest(name: string): boolean {
  return DIGEST_SIZES.has(name);
}

/** §7.5.4: the first offered name implemented here, skipping unknown ones; `sha256` when none is left. */
export function chooseDigest(offered: readonly string[]): string {
  return offered.find(isImplementedDigest) ?? SHA256;
}

/** The XXH3-128 of `data` in its canonical big-endian form (§7.5.1). */
function xxh3128(data: Uint8Array): Uint8Array {
  let value = xxhash.xxh3.xxh128(data);
  const out = new Uint8Array(16);
  for (let i = 15; i >= 0; i--) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return out;
}

/** The digest of `data` under algorithm `name`, in one pass; throws RangeError for an unknown name. */
export function digestOf(name: string, data: Uint8Array): Uint8Array {
  switch (name) {
    case SHA256:
      return new Uint8Array(createHash("sha256").update(data).digest());
    case XXH3_128:
      return xxh3128(data);
    default:
      throw new RangeError(`digest algorithm ${JSON.stringify(name)} is not implemented`);
  }
}

/**
 * Hashes one payload as it moves. `update` takes the pieces in order; `finish` gets the whole payload
 * (the assembled buffer, or the tensor being sent) and returns its digest.
 */
export interface PayloadHasher {
  update(piece: Uint8Array): void;
  finish(whole: Uint8Array): Uint8Array;
}

class StreamingSha256 implements PayloadHasher {
  private readonly hash: Hash = createHash("sha256");
  update(piece: Uint8Array): void {
    this.hash.update(piece);
  }
  finish(): Uint8Array {
    return new Uint8Array(this.hash.digest());
  }
}

class WholeXxh3 implements PayloadHasher {
  update(): void {
    // hashed once, whole, in finish (see the module's comment)
  }
  finish(whole: Uint8Array): Uint8Array {
    return xxh3128(whole);
  }
}

/** A fresh hasher of algorithm `name`; throws RangeError for an unknown name. */
export function createPayloadHasher(name: string): PayloadHasher {
  switch (name) {
    case SHA256:
      return new StreamingSha256();
    case XXH3_128:
      return new WholeXxh3();
    default:
      throw new RangeError(`digest algorithm ${JSON.stringify(name)} is not implemented`);
  }
}

/** A message with the two digest fields of §7.5.7 and §7.5.8 (`TensorInfo`, `Chunk`). */
export interface DigestFields {
  sha256: Uint8Array;
  digest: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/** The digest a message carries under `algorithm`: `sha256` under SHA-256, `digest` otherwise (§7.5.8). */
export function carriedDigest(message: DigestFields, algorithm: string): Uint8Array {
  return algorithm === SHA256 ? message.sha256 : message.digest;
}

/** The field the other algorithms use: must be empty under `algorithm` (§7.5.7, §7.5.8). */
export function otherDigestField(message: DigestFields, algorithm: string): Uint8Array {
  return algorithm === SHA256 ? message.digest : message.sha256;
}

/** The two digest fields that carry `digest` under `algorithm` (the other one empty). */
export function digestFields(algorithm: string, digest?: Uint8Array): DigestFields {
  const value = digest ?? EMPTY;
  return algorithm === SHA256 ? { sha256: value, digest: EMPTY } : { sha256: EMPTY, digest: value };
}
