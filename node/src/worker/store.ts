/**
 * The object store (docs/protocol.md §9): one ordered map of tensors per identity, with tags, a
 * description and a byte quota. Every operation is synchronous and either completes or changes nothing
 * (§9.10.1), so a request that fails, is cancelled or expires leaves the store as it was.
 */
import { create } from "@bufbuild/protobuf";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
} from "../wire/errors.js";
import { ObjectInfoSchema, type ObjectInfo as ProtoObjectInfo } from "../wire/proto.js";
import { digestOf, SHA256 } from "../wire/digests.js";
import { tensorInfoOf, type HostTensor } from "../wire/tensors.js";

/** The most UTF-8 bytes of an object id (§9.9.1). */
export const MAX_OBJECT_ID_BYTES = 256;

/** One stored object. */
export interface StoredObject {
  readonly id: string;
  readonly tags: readonly string[];
  readonly description: string;
  readonly tensor: HostTensor;
  /**
   * The tensor's digests by algorithm (§7.5.11): the one verified on upload, and any other computed once
   * when a connection under that algorithm first read the object.
   */
  readonly digests: Map<string, Uint8Array>;
}

/** Checks an id named by a request (§9.9.2): non-empty and at most 256 UTF-8 bytes. */
export function checkObjectId(id: string, allowEmpty = false): void {
  if (id === "" && !allowEmpty) {
    throw new InvalidArgumentError("the object id is empty (§9.9.1)");
  }
  const size = Buffer.byteLength(id, "utf8");
  if (size > MAX_OBJECT_ID_BYTES) {
    throw new InvalidArgumentError(`the object id has ${size} bytes; at most ${MAX_OBJECT_ID_BYTES} (§9.9.1)`, {
      details: { limit: String(MAX_OBJECT_ID_BYTES) },
    });
  }
}

/** What a send asks for, before the tensor is known (a chunked upload checks this at announcement, §7.3.9). */
export interface SendPlan {
  /** The id given, or "" for one the store chooses. */
  readonly id: string;
  readonly overwrite: boolean;
  readonly nbytes: number;
}

/** One identity's objects, in insertion order (§9.5.2). */
export class ObjectStore {
  // A Map keeps insertion order, and `set` on an existing key keeps that key's position (§9.2.5).
  private readonly objects = new Map<string, StoredObject>();
  private bytes = 0;
  private nextId = 1;

  /** `maxBytes` is `limits.max_object_bytes` (0: no quota). */
  constructor(private readonly maxBytes: number) {}

  /** Stored tensor bytes (the quota usage). */
  get usedBytes(): number {
    return this.bytes;
  }

  /** The number of objects (§9.6). */
  get count(): number {
    return this.objects.size;
  }

  /**
   * Checks a send before its tensor is stored: id length, ALREADY_EXISTS without overwrite (§9.2.4) and
   * the quota (§9.2.7). Throws the matching error; changes nothing.
   */
  checkSend(plan: SendPlan): void {
    checkObjectId(plan.id, true);
    const existing = plan.id === "" ? undefined : this.objects.get(plan.id);
    if (existing !== undefined && !plan.overwrite) {
      throw new AlreadyExistsError(`an object with id ${JSON.stringify(plan.id)} exists and overwrite is false`);
    }
    if (this.maxBytes > 0) {
      const after = this.bytes - (existing?.tensor.nbytes ?? 0) + plan.nbytes;
      if (after > this.maxBytes) {
        throw new ResourceExhaustedError(
          `storing ${plan.nbytes} bytes would make ${after} stored bytes, above the quota of ${this.maxBytes}`,
          { details: { limit: String(this.maxBytes) } },
        );
      }
    }
  }

  /** Stores a tensor after {@link checkSend}'s checks (run again here, §7.3.10's final check). */
  put(
    plan: Omit<SendPlan, "nbytes">,
    tags: readonly string[],
    description: string,
    tensor: HostTensor,
    digest: { algorithm: string; value: Uint8Array } = { algorithm: SHA256, value: digestOf(SHA256, tensor.data) },
  ): StoredObject {
    this.checkSend({ ...plan, nbytes: tensor.nbytes });
    const id = plan.id === "" ? this.freshId() : plan.id;
    const existing = this.objects.get(id);
    const object: StoredObject = {
      id,
      tags: Object.freeze([...tags]),
      description,
      tensor,
      digests: new Map([[digest.algorithm, digest.value]]),
    };
    this.objects.set(id, object);
    this.bytes += tensor.nbytes - (existing?.tensor.nbytes ?? 0);
    return object;
  }

  /** The object with `id`, or NOT_FOUND (§9.3.2). */
  get(id: string): StoredObject {
    checkObjectId(id);
    const object = this.objects.get(id);
    if (object === undefined) {
      throw new NotFoundError(`no object with id ${JSON.stringify(id)}`);
    }
    return object;
  }

  /** Deletes the object with `id` and returns its freed bytes (§9.4.4), or NOT_FOUND. */
  delete(id: string): number {
    const object = this.get(id);
    this.objects.delete(id);
    this.bytes -= object.tensor.nbytes;
    return object.tensor.nbytes;
  }

  /** Every object, in insertion order (§9.5). */
  list(): StoredObject[] {
    return [...this.objects.values()];
  }

  /** Deletes everything; returns how many objects were removed (§9.7). */
  clear(): number {
    const removed = this.objects.size;
    this.objects.clear();
    this.bytes = 0;
    return removed;
  }

  /** The objects carrying every tag of `tags`, in insertion order (§9.8). */
  search(tags: readonly string[]): StoredObject[] {
    return this.list().filter((object) => tags.every((tag) => object.tags.includes(tag)));
  }

  private freshId(): string {
    // §9.2.3: unique in this store and a valid id. At most `count` of the next `count + 1` candidates
    // can be taken, so the loop always ends.
    for (let attempt = 0; attempt <= this.objects.size; attempt++) {
      const id = `obj-${this.nextId++}`;
      if (!this.objects.has(id)) return id;
    }
    throw new Error("unreachable: no free object id");
  }
}

/** The stores of every identity, created on first use (§9.1). */
export class ObjectStores {
  private readonly stores = new Map<string, ObjectStore>();

  constructor(private readonly maxBytes: number) {}

  /** The store of `identity`. */
  of(identity: string): ObjectStore {
    let store = this.stores.get(identity);
    if (store === undefined) {
      store = new ObjectStore(this.maxBytes);
      this.stores.set(identity, store);
    }
    return store;
  }
}

/** The digest of a stored object under `algorithm`, computed at most once per algorithm (§7.5.11). */
export function objectDigest(object: StoredObject, algorithm: string): Uint8Array {
  let value = object.digests.get(algorithm);
  if (value === undefined) {
    value = digestOf(algorithm, object.tensor.data);
    object.digests.set(algorithm, value);
  }
  return value;
}

/**
 * The `ObjectInfo` of a stored object with its digest under `algorithm` (§7.5.8); with `digest` false the
 * digest is left empty (§9.5.3).
 */
export function objectInfo(object: StoredObject, digest = true, algorithm: string = SHA256): ProtoObjectInfo {
  return create(ObjectInfoSchema, {
    id: object.id,
    tags: [...object.tags],
    description: object.description,
    tensor: tensorInfoOf(object.tensor, digest ? objectDigest(object, algorithm) : undefined, algorithm),
  });
}
