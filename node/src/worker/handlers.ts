/**
 * What each request does on a worker without training (docs/protocol.md §6.1, §7.3, §9, §10, §11): the
 * {@link RequestHandler} a {@link ServerSession} runs. It owns no session rule; it turns one request body
 * into its reply body or a typed error.
 */
import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError, ResourceExhaustedError, UnimplementedError, DataLossError } from "../wire/errors.js";
import { bodyName, encodeEnvelope, makeEnvelope, maxChunkDataBytes, type Body, type Capability } from "../wire/envelope.js";
import {
  ClearObjectsReplySchema,
  CountObjectsReplySchema,
  DeleteObjectReplySchema,
  GetObjectReplySchema,
  ListDatasetsReplySchema,
  ListMethodsReplySchema,
  ListObjectsReplySchema,
  PongSchema,
  SearchObjectsReplySchema,
  SendObjectReplySchema,
  type GetObjectRequest as ProtoGetObjectRequest,
  type SendObjectRequest as ProtoSendObjectRequest,
  type Chunk as ProtoChunk,
} from "../wire/proto.js";
import {
  ChunkAssembler,
  HostTensor,
  bytesEqual,
  chunkRanges,
  makeChunk,
  tensorFromProto,
  tensorToProto,
  validateTensorInfo,
} from "../wire/tensors.js";
import { carriedDigest, digestOf } from "../wire/digests.js";
import { datasetInfo, type Dataset } from "./datasets.js";
import type { MethodRegistry } from "./methods.js";
import type { RequestContext, RequestHandler } from "./session.js";
import { checkObjectId, objectInfo, type ObjectStores } from "./store.js";

/** The services a handler answers from. */
export interface WorkerServices {
  readonly capabilities: readonly Capability[];
  readonly stores: ObjectStores;
  readonly datasets: ReadonlyMap<string, Dataset>;
  readonly methods: MethodRegistry;
}

/** The request handler of a worker with `services`. */
export function makeRequestHandler(services: WorkerServices): RequestHandler {
  return async (ctx: RequestContext): Promise<Body> => {
    const body = ctx.body;
    switch (body.case) {
      case "ping":
        return { case: "pong", value: create(PongSchema, { payload: body.value.payload }) };
      case "sendObject":
        return sendObject(services, ctx, body.value);
      case "getObject":
        return getObject(services, ctx, body.value);
      case "deleteObject": {
        const freed = services.stores.of(ctx.identity).delete(body.value.id);
        return { case: "deleteObjectReply", value: create(DeleteObjectReplySchema, { freedBytes: BigInt(freed) }) };
      }
      case "listObjects": {
        const objects = services.stores.of(ctx.identity).list().map((o) => objectInfo(o, true, ctx.digest));
        return { case: "listObjectsReply", value: create(ListObjectsReplySchema, { objects }) };
      }
      case "countObjects": {
        const count = BigInt(services.stores.of(ctx.identity).count);
        return { case: "countObjectsReply", value: create(CountObjectsReplySchema, { count }) };
      }
      case "clearObjects": {
        const removed = BigInt(services.stores.of(ctx.identity).clear());
        return { case: "clearObjectsReply", value: create(ClearObjectsReplySchema, { removed }) };
      }
      case "searchObjects": {
        const objects = services.stores.of(ctx.identity).search(body.value.tags).map((o) => objectInfo(o, true, ctx.digest));
        return { case: "searchObjectsReply", value: create(SearchObjectsReplySchema, { objects }) };
      }
      case "listDatasets": {
        const keys = [...services.datasets.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
        const datasets = keys.map((key) => datasetInfo(services.datasets.get(key)!));
        return { case: "listDatasetsReply", value: create(ListDatasetsReplySchema, { datasets }) };
      }
      case "call": {
        const reply = await services.methods.call(
          body.value,
          { identity: ctx.identity, signal: ctx.signal, notify: (topic, payload) => ctx.notify(topic, payload) },
          ctx.limits.maxCallArgsBytes,
        );
        return { case: "callReply", value: reply };
      }
      case "listMethods":
        return { case: "listMethodsReply", value: create(ListMethodsReplySchema, { methods: services.methods.list() }) };
      default:
        // Training (§12) and anything else this worker does not implement (§3.6.2).
        throw new UnimplementedError(`${bodyName(body.case)} is not implemented by this server`);
    }
  };
}

async function sendObject(services: WorkerServices, ctx: RequestContext, request: ProtoSendObjectRequest): Promise<Body> {
  const store = services.stores.of(ctx.identity);
  const payload = request.payload;
  const plan = { id: request.id, overwrite: request.overwrite };
  const algorithm = ctx.digest;
  // the digest verified on arrival is the one stored and replied (§9.2.10, §7.5.11): never hashed twice
  const reply = (tensor: HostTensor, value: Uint8Array): Body => {
    const object = store.put(plan, request.tags, request.description, tensor, { algorithm, value });
    return { case: "sendObjectReply", value: create(SendObjectReplySchema, { info: objectInfo(object, true, algorithm) }) };
  };
  switch (payload.case) {
    case "tensor": {
      checkObjectId(request.id, true);
      const tensor = tensorFromProto(payload.value);
      // The frame's buffer is not kept alive by what is stored: the store holds its own copy.
      const data = new Uint8Array(tensor.data);
      return reply(HostTensor.create(tensor.dtype, tensor.shape, data), digestOf(algorithm, data));
    }
    case "chunked":
      break;
    default:
      throw new InvalidArgumentError("send_object needs a payload (§9.2.2)");
  }
  if (!services.capabilities.includes("chunked")) {
    throw new UnimplementedError("chunked uploads need the capability chunked (§7.3.13)");
  }
  const info = payload.value;
  validateTensorInfo(info, "chunked", true, algorithm); // §7.3.2, §7.5.8
  if (info.nbytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ResourceExhaustedError(`an upload of ${info.nbytes} bytes is larger than this server can hold`);
  }
  const nbytes = Number(info.nbytes);
  store.checkSend({ ...plan, nbytes }); // §7.3.9: refused before any chunk is needed
  const carried = carriedDigest(info, algorithm);
  const header = carried.length > 0 ? carried : undefined;
  const complete = (data: Uint8Array, value: Uint8Array): Body => {
    // §7.3.10: the checks of §7.2 (BOOL bytes) and a final quota check happen in tensorFromProto and put.
    const tensor = HostTensor.create(info.dtype, info.shape, data);
    return reply(tensor, value);
  };
  if (nbytes === 0) {
    // §7.3.11, §7.3.28, §7.5.9: nothing to wait for; a header digest must still be the empty payload's.
    const empty = digestOf(algorithm, new Uint8Array(0));
    if (header !== undefined && !bytesEqual(header, empty)) {
      throw new DataLossError(`the digest of an empty upload must be the ${algorithm} of no bytes`);
    }
    return complete(new Uint8Array(0), empty);
  }
  const assembler = new ChunkAssembler({
    totalBytes: nbytes,
    maxChunkBytes: ctx.limits.chunkBytes,
    trailingDigest: header === undefined,
    algorithm,
  });
  return new Promise<Body>((resolve, reject) => {
    ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), { once: true });
    ctx.receiveChunks((chunk: ProtoChunk) => {
      assembler.push(chunk);
      if (assembler.complete) {
        // Synchronous from the last chunk to the reply: a cancel cannot slip in between (§9.10.1).
        const data = assembler.finish(header);
        resolve(complete(data, assembler.verified!));
      }
    });
  });
}

async function getObject(services: WorkerServices, ctx: RequestContext, request: ProtoGetObjectRequest): Promise<Body> {
  const object = services.stores.of(ctx.identity).get(request.id);
  const tensor = object.tensor;
  const limits = ctx.limits;
  const clientLimit = ctx.clientMaxFrameBytes;
  const info = objectInfo(object, true, ctx.digest);
  const inline = create(GetObjectReplySchema, { info, tensor: tensorToProto(tensor) });
  if (tensor.nbytes <= limits.chunkBytes) {
    // §7.3.17, §7.3.18: inline only when small and within both frame limits.
    const size = encodeEnvelope(makeEnvelope(ctx.requestId, { case: "getObjectReply", value: inline })).length;
    if (size <= limits.maxFrameBytes && (clientLimit === 0 || size <= clientLimit)) {
      return { case: "getObjectReply", value: inline };
    }
  }
  const frameLimit = clientLimit === 0 ? limits.maxFrameBytes : Math.min(clientLimit, limits.maxFrameBytes);
  const chunkSize = maxChunkDataBytes(frameLimit, limits.chunkBytes, ctx.requestId, tensor.nbytes);
  if (chunkSize === 0) {
    throw new ResourceExhaustedError(`no chunk of this tensor fits in a frame of ${frameLimit} bytes`, {
      details: { limit: String(frameLimit) },
    });
  }
  for (const range of chunkRanges(tensor.nbytes, chunkSize)) {
    // §6.2.4: a cancelled or expired download stops between chunks (sendChunk throws then).
    await ctx.sendChunk(makeChunk(tensor.data, range));
  }
  return { case: "getObjectReply", value: create(GetObjectReplySchema, { info }) };
}
