/**
 * The client side of one fedproto session, without I/O (docs/protocol.md §4 to §7): frames in
 * ({@link ClientSession.receive}), frames out ({@link ClientSession.takeFrames},
 * {@link ClientSession.nextUploadChunk}) and session events out ({@link ClientSession.takeEvents}).
 *
 * It owns every rule a client must keep: the handshake, request ids, the in-flight limit (requests over
 * it wait here, §5.5.7), one terminal reply per request matched by id, cancel and goodbye, chunked
 * uploads with a trailing digest and verified chunked downloads, and the frame limit. Timers, sockets
 * and promises belong to the thin layer above (`client.ts`), which hands each request a
 * {@link RequestCallbacks} and is told exactly once how it ended.
 */
import { create } from "@bufbuild/protobuf";
import {
  ChunkAssembler,
  DataLossError,
  DeadlineExceededError,
  PREFERRED_DIGESTS,
  SHA256,
  carriedDigest,
  createPayloadHasher,
  digestOf,
  isImplementedDigest,
  type PayloadHasher,
  FedprotoError,
  HostTensor,
  InternalError,
  InvalidArgumentError,
  REQUEST_KINDS,
  ResourceExhaustedError,
  UnavailableError,
  CancelledError,
  bodyName,
  bytesEqual,
  chunkEnvelopeSize,
  decodeEnvelope,
  encodeEnvelope,
  errorFromProto,
  makeChunk,
  makeEnvelope,
  proto,
  tensorFromProto,
  tensorInfoOf,
  tensorToProto,
  valueFromProto,
  type Body,
  type BodyCase,
  type JsValue,
} from "../wire/index.js";
import { ConnectionClosedError } from "./errors.js";
import { serverInfoFromWelcome, type ServerInfo } from "./types.js";

/** The protocol versions this client speaks (§4.2.1). */
export const CLIENT_VERSIONS: readonly number[] = [1];

/** Bytes a trailing digest adds to the last chunk envelope: tag, length and 32 bytes (§7.3.26). */
const TRAILING_DIGEST_BYTES = 34;

/** Where the session is. */
export type ClientSessionState = "new" | "handshaking" | "open" | "closing" | "closed";

/** What the Hello carries (§4.1, §15.1). */
export interface HelloOptions {
  /** The bearer token; empty or absent for none. */
  token?: string;
  /** A free-form name of the client program, for the server's logs. */
  clientName?: string;
  /** The largest frame this client accepts; 0 for no limit of its own (§3.4.4). */
  maxFrameBytes?: number;
  /** Payload digest algorithms to offer, in order of preference (§7.5.3); fastest first by default. */
  digests?: readonly string[];
}

/**
 * How a request ended: its reply body (and, for `get_object`, the tensor assembled and verified from
 * the inline reply or the chunks), or the error to report.
 */
export type Outcome =
  | { readonly ok: true; readonly body: Body; readonly tensor?: HostTensor }
  | { readonly ok: false; readonly error: FedprotoError };

/** What the layer above wants to hear about one request. */
export interface RequestCallbacks {
  /** Called exactly once, when the caller's request is over (reply, error, cancel, connection lost). */
  settle(outcome: Outcome): void;
  /** A `fit_progress` event of the request (§12.4). */
  progress?(progress: proto.FitProgress): void;
  /** Bytes of a chunked transfer sent or received so far, and the total. */
  transfer?(done: number, total: number): void;
}

/** Session events that belong to no request. */
export type SessionEvent =
  | { readonly type: "welcome"; readonly server: ServerInfo }
  | { readonly type: "handshakeFailed"; readonly error: FedprotoError }
  | { readonly type: "notification"; readonly topic: string; readonly payload: JsValue }
  | { readonly type: "goodbye"; readonly reason: string }
  | { readonly type: "connectionError"; readonly error: FedprotoError }
  | { readonly type: "protocolViolation"; readonly closeCode: number; readonly message: string };

/** Options of one request. */
export interface SubmitOptions {
  /** The caller's deadline as an absolute time in ms (same clock as `now`); none when absent. */
  deadlineAt?: number;
  /** The current time in ms, for the remaining deadline when the request goes out (§5.6.8). */
  now?: number;
}

/** A chunked upload being sent. */
interface Upload {
  readonly data: Uint8Array;
  readonly chunkBytes: number;
  /** The digest goes in the last chunk (§7.3.26) rather than in the header. */
  readonly trailing: boolean;
  readonly hash: PayloadHasher;
  readonly algorithm: string;
  offset: number;
}

/** One request from submission to its terminal reply. */
interface Pending {
  readonly id: bigint;
  readonly kind: BodyCase;
  readonly reply: BodyCase;
  readonly callbacks: RequestCallbacks;
  readonly deadlineAt: number | undefined;
  /** The request envelope, until it is sent. */
  envelope: proto.Envelope | undefined;
  /** Its encoding (without a deadline), until it is sent. */
  frame: Uint8Array | undefined;
  /** The caller was told the outcome (a cancelled request stays until its terminal reply, §6.2.10). */
  settled: boolean;
  upload: Upload | undefined;
  download: ChunkAssembler | undefined;
}

/** The id of the Hello; requests count up from the next one (§5.1.7). */
const HELLO_ID = 1n;

/**
 * One client session, from Hello to close, as a state machine over frames.
 */
export class ClientSession {
  private stateValue: ClientSessionState = "new";
  /** This side sent its Goodbye: nothing more goes out (§6.3.8). */
  private goodbyeSent = false;
  private serverInfo: ServerInfo | undefined;
  private helloMaxFrame = 0;
  private offeredDigests: string[] = [];
  private nextId = HELLO_ID + 1n;
  /** Requests sent and not yet answered with a terminal reply (the client's in-flight count, §5.5.7). */
  private readonly inFlightMap = new Map<bigint, Pending>();
  /** Requests held back by the in-flight limit, in submission order. */
  private readonly waiting: Pending[] = [];
  /** Uploads whose request went out and whose chunks are still to send, in order. */
  private readonly uploads: Pending[] = [];
  private frames: Uint8Array[] = [];
  private events: SessionEvent[] = [];

  /** Where the session is. */
  get state(): ClientSessionState {
    return this.stateValue;
  }

  /** The server's Welcome, once the handshake succeeded. */
  get server(): ServerInfo | undefined {
    return this.serverInfo;
  }

  /** Requests sent whose terminal reply has not arrived (cancelled ones included, §6.2.10). */
  get inFlight(): number {
    return this.inFlightMap.size;
  }

  /** Requests held back because `max_in_flight` requests are in flight (§5.5.7). */
  get queued(): number {
    return this.waiting.length;
  }

  /** True while the request `id` is held back in the client, not yet sent (§5.5.7). */
  isHeldBack(id: bigint): boolean {
    return this.waiting.some((p) => p.id === id);
  }

  /** True when frames are waiting to be sent. */
  get hasFrames(): boolean {
    return this.frames.length > 0;
  }

  /** The frames to send now, in order (small frames; upload chunks come from {@link nextUploadChunk}). */
  takeFrames(): Uint8Array[] {
    const out = this.frames;
    this.frames = [];
    return out;
  }

  /** The session events since the last call. */
  takeEvents(): SessionEvent[] {
    const out = this.events;
    this.events = [];
    return out;
  }

  // -- handshake (§4) ---------------------------------------------------------------------------------

  /** Starts the handshake: queues the Hello (§4.1.1, §4.1.2). */
  hello(options: HelloOptions = {}): void {
    if (this.stateValue !== "new") {
      throw new Error(`hello in state ${this.stateValue}`);
    }
    const maxFrame = options.maxFrameBytes ?? 0;
    if (!Number.isSafeInteger(maxFrame) || maxFrame < 0 || (maxFrame > 0 && maxFrame < 1024)) {
      throw new InvalidArgumentError(`maxFrameBytes must be 0 (no limit) or at least 1024, not ${maxFrame} (§4.6.3)`);
    }
    this.helloMaxFrame = maxFrame;
    this.offeredDigests = [...(options.digests ?? PREFERRED_DIGESTS)];
    const hello = create(proto.HelloSchema, {
      digests: this.offeredDigests,
      versions: [...CLIENT_VERSIONS],
      clientName: options.clientName ?? "fedproto-node",
      token: options.token ?? "",
      maxFrameBytes: BigInt(this.helloMaxFrame),
    });
    this.frames.push(encodeEnvelope(makeEnvelope(HELLO_ID, { case: "hello", value: hello })));
    this.stateValue = "handshaking";
  }

  private onHandshakeReply(envelope: proto.Envelope): void {
    const body = envelope.body;
    if (body.case === "welcome") {
      const problem = this.checkWelcome(body.value);
      if (problem !== undefined) {
        this.violation(1002, problem);
        this.events.push({ type: "handshakeFailed", error: new InternalError(problem) });
        return;
      }
      this.serverInfo = serverInfoFromWelcome(body.value);
      this.stateValue = "open";
      this.events.push({ type: "welcome", server: this.serverInfo });
      return;
    }
    if (body.case === "error") {
      // The Hello's own error (§4.2.3, §15.1.3), or a connection-level one before the Welcome (§4.1.4).
      this.events.push({ type: "handshakeFailed", error: errorFromProto(body.value) });
      return;
    }
    if (body.case === "notification" || body.case === undefined) {
      return; // §6.4.1: not before the Welcome; an unknown body is ignored (§3.6.5)
    }
    this.violation(1002, `expected a Welcome, got ${bodyName(body.case)} (§4.1.3)`);
    this.events.push({ type: "handshakeFailed", error: new InternalError(`expected a Welcome, got ${bodyName(body.case)}`) });
  }

  /** §4.1.8: a Welcome the client can work with, or what is wrong with it. */
  private checkWelcome(welcome: proto.Welcome): string | undefined {
    if (!CLIENT_VERSIONS.includes(welcome.version)) {
      return `the server chose version ${welcome.version}, which was not offered (§4.2.2)`;
    }
    const limits = welcome.limits;
    if (limits === undefined) {
      return "the Welcome carries no limits (§4.6.1)";
    }
    if (limits.maxFrameBytes === 0n || limits.maxInFlight === 0 || limits.chunkBytes === 0n) {
      return "the Welcome's max_frame_bytes, max_in_flight and chunk_bytes must not be 0 (§14.1.1)";
    }
    if (welcome.digest !== "" && welcome.digest !== SHA256 && !this.offeredDigests.includes(welcome.digest)) {
      return `the server chose the digest ${JSON.stringify(welcome.digest)}, which was not offered (§7.5.5)`;
    }
    if (!isImplementedDigest(welcome.digest === "" ? SHA256 : welcome.digest)) {
      return `the server chose the digest ${JSON.stringify(welcome.digest)}, which this client does not compute (§7.5.5)`;
    }
    return undefined;
  }

  // -- requests (§5) ----------------------------------------------------------------------------------

  /**
   * Submits a request: it goes out now when fewer than `max_in_flight` requests are in flight, and
   * waits here otherwise (§5.5.7). Returns its request id. Throws (without submitting) when the session
   * cannot take requests or the envelope would exceed the server's frame limit (§14.2.7).
   */
  submit(body: Body, callbacks: RequestCallbacks, options: SubmitOptions = {}): bigint {
    const kind = body.case;
    const spec = kind === undefined ? undefined : REQUEST_KINDS.get(kind);
    if (kind === undefined || spec === undefined || kind === "hello") {
      throw new InvalidArgumentError(`${bodyName(kind)} is not a request body (§19.1)`);
    }
    this.checkOpen();
    const id = this.allocateId();
    const envelope = makeEnvelope(id, body);
    const limit = this.server!.limits.maxFrameBytes;
    const frame = encodeEnvelope(envelope);
    const size = frame.length + (options.deadlineAt === undefined ? 0 : 11); // room for deadline_ms
    if (size > limit) {
      throw new ResourceExhaustedError(
        `the ${bodyName(kind)} request takes ${size} bytes, more than the server's max_frame_bytes ${limit} (§14.2.7)`,
        { details: { limit: String(limit) } },
      );
    }
    const pending: Pending = {
      id,
      kind,
      reply: spec.reply,
      callbacks,
      deadlineAt: options.deadlineAt,
      envelope,
      frame,
      settled: false,
      upload: undefined,
      download: undefined,
    };
    this.waiting.push(pending);
    this.dispatchWaiting(options.now);
    return id;
  }

  /**
   * Submits a `send_object` for `tensor`: inline when the envelope fits and the tensor is no bigger
   * than one chunk, chunked otherwise (§7.3.14) with the digest trailing in the last chunk (§7.3.26)
   * when that chunk's envelope has room for it (§7.3.30).
   */
  submitSendObject(
    tensor: HostTensor,
    meta: { id?: string; tags?: readonly string[]; description?: string; overwrite?: boolean },
    callbacks: RequestCallbacks,
    options: SubmitOptions = {},
  ): bigint {
    this.checkOpen();
    const limits = this.server!.limits;
    const base = {
      id: meta.id ?? "",
      tags: [...(meta.tags ?? [])],
      description: meta.description ?? "",
      overwrite: meta.overwrite ?? false,
    };
    const chunked = this.server!.capabilities.has("chunked");
    const inline: Body = {
      case: "sendObject",
      value: create(proto.SendObjectRequestSchema, { ...base, payload: { case: "tensor", value: tensorToProto(tensor) } }),
    };
    // Inline when chunks are not available (submit() refuses what exceeds the frame limit, §7.3.14),
    // or when the tensor is no bigger than one chunk and its envelope fits (with room for a deadline).
    if (!chunked || tensor.nbytes === 0) {
      return this.submit(inline, callbacks, options);
    }
    if (tensor.nbytes <= limits.chunkBytes) {
      const size = encodeEnvelope(makeEnvelope(this.peekId(), inline)).length + 11;
      if (size <= limits.maxFrameBytes) {
        return this.submit(inline, callbacks, options);
      }
    }
    // Chunked: the header, then chunks of exactly chunk_bytes but the last (§7.3.5).
    const total = tensor.nbytes;
    const chunkBytes = limits.chunkBytes;
    const id = this.peekId();
    const lastLength = total % chunkBytes === 0 ? chunkBytes : total % chunkBytes;
    const lastOffset = total - lastLength;
    const trailing = chunkEnvelopeSize(id, lastOffset, lastLength, total) + TRAILING_DIGEST_BYTES <= limits.maxFrameBytes;
    if (chunkEnvelopeSize(id, lastOffset, Math.min(chunkBytes, total), total) > limits.maxFrameBytes) {
      throw new ResourceExhaustedError(
        `a chunk of ${chunkBytes} bytes does not fit in max_frame_bytes ${limits.maxFrameBytes} (§7.3.25)`,
      );
    }
    const algorithm = this.server!.digest;
    const header = tensorInfoOf(tensor, trailing ? undefined : digestOf(algorithm, tensor.data), algorithm);
    const body: Body = {
      case: "sendObject",
      value: create(proto.SendObjectRequestSchema, { ...base, payload: { case: "chunked", value: header } }),
    };
    const hash = createPayloadHasher(algorithm);
    const upload: Upload = { data: tensor.data, chunkBytes, trailing, hash, algorithm, offset: 0 };
    const submitted = this.submit(body, callbacks, options);
    const pending = this.inFlightMap.get(submitted) ?? this.waiting.find((p) => p.id === submitted);
    pending!.upload = upload;
    // A request that went out at once starts its chunks now; a held-back one when it goes out.
    if (this.inFlightMap.has(submitted)) {
      this.uploads.push(pending!);
    }
    return submitted;
  }

  /**
   * The next chunk frame of the oldest upload in progress, or undefined when no chunk is due. Chunks
   * follow their request at once (§7.3.31); an upload whose request already ended sends no more.
   */
  nextUploadChunk(): Uint8Array | undefined {
    if (this.goodbyeSent) {
      this.uploads.length = 0; // §6.3.8: nothing more after the Goodbye
    }
    while (this.uploads.length > 0) {
      const pending = this.uploads[0]!;
      const upload = pending.upload!;
      if (pending.settled || !this.inFlightMap.has(pending.id) || upload.offset >= upload.data.length) {
        this.uploads.shift();
        continue;
      }
      const length = Math.min(upload.chunkBytes, upload.data.length - upload.offset);
      const range = { offset: upload.offset, length };
      const piece = upload.data.subarray(upload.offset, upload.offset + length);
      upload.hash.update(piece);
      upload.offset += length;
      const last = upload.offset === upload.data.length;
      const digest = last && upload.trailing ? upload.hash.finish(upload.data) : undefined;
      if (last) {
        this.uploads.shift();
      }
      pending.callbacks.transfer?.(upload.offset, upload.data.length);
      return encodeEnvelope(makeEnvelope(pending.id, { case: "chunk", value: makeChunk(upload.data, range, digest, upload.algorithm) }));
    }
    return undefined;
  }

  /**
   * Cancels a request for its caller (§6.2): the caller hears `error` now; a request that went out gets
   * a Cancel and keeps its id and in-flight slot until its terminal reply arrives (§6.2.10); a request
   * still held back is dropped without a frame. Does nothing once the caller was told the outcome.
   */
  cancel(id: bigint, error: FedprotoError, reason = ""): void {
    const waitingIndex = this.waiting.findIndex((p) => p.id === id);
    if (waitingIndex >= 0) {
      const [pending] = this.waiting.splice(waitingIndex, 1);
      this.settle(pending!, { ok: false, error });
      return;
    }
    const pending = this.inFlightMap.get(id);
    if (pending === undefined || pending.settled) {
      return;
    }
    this.settle(pending, { ok: false, error });
    pending.download = undefined; // §7.3.23: discard what arrived
    if (!this.goodbyeSent && (this.stateValue === "open" || this.stateValue === "closing")) {
      const cancel = create(proto.CancelSchema, { reason });
      this.frames.push(encodeEnvelope(makeEnvelope(id, { case: "cancel", value: cancel })));
    }
  }

  /**
   * Ends the session from this side (§6.3.1): queues a Goodbye; requests held back fail with CANCELLED
   * without being sent (§6.3.8); requests in flight wait for the server's CANCELLED (§6.3.2).
   */
  goodbye(reason = ""): void {
    if (this.stateValue !== "open" && this.stateValue !== "closing") {
      return;
    }
    this.stateValue = "closing";
    this.failWaiting(new CancelledError("the client said goodbye before the request was sent (§6.3.8)"));
    if (!this.goodbyeSent) {
      this.goodbyeSent = true;
      const goodbye = create(proto.GoodbyeSchema, { reason });
      this.frames.push(encodeEnvelope(makeEnvelope(0n, { case: "goodbye", value: goodbye })));
    }
  }

  /**
   * The connection is gone (§5.3.6): every request not yet settled fails with UNAVAILABLE (§5.3.8); a
   * handshake in progress fails too.
   */
  connectionLost(closeCode: number | undefined, reason = ""): void {
    if (this.stateValue === "closed") {
      return;
    }
    const handshaking = this.stateValue === "handshaking" || this.stateValue === "new";
    this.stateValue = "closed";
    const text = `the connection closed${closeCode === undefined ? "" : ` (code ${closeCode}${reason ? `: ${reason}` : ""})`}`;
    const error = (): ConnectionClosedError => new ConnectionClosedError(`${text} before the reply arrived`, closeCode);
    this.failWaiting(error());
    for (const pending of this.inFlightMap.values()) {
      if (!pending.settled) {
        this.settle(pending, { ok: false, error: error() });
      }
    }
    this.inFlightMap.clear();
    this.uploads.length = 0;
    if (handshaking) {
      this.events.push({ type: "handshakeFailed", error: new ConnectionClosedError(`${text} during the handshake`, closeCode) });
    }
  }

  // -- receiving --------------------------------------------------------------------------------------

  /** Takes one binary frame from the server. */
  receive(frame: Uint8Array): void {
    if (this.stateValue === "closed") {
      return;
    }
    const limit = this.helloMaxFrame;
    if (limit > 0 && frame.length > limit) {
      this.violation(1009, `a frame of ${frame.length} bytes, over the max_frame_bytes ${limit} of the Hello (§3.4.5)`);
      return;
    }
    let envelope: proto.Envelope;
    try {
      envelope = decodeEnvelope(frame);
    } catch {
      this.violation(1002, "a frame from the server does not parse as an Envelope (§3.3.6)");
      return;
    }
    if (this.stateValue === "handshaking") {
      this.onHandshakeReply(envelope);
      return;
    }
    if (envelope.requestId === 0n) {
      this.onConnectionLevel(envelope);
      return;
    }
    const pending = this.inFlightMap.get(envelope.requestId);
    if (pending === undefined) {
      return; // no request of ours (§5.3.3); nothing to match it to
    }
    this.onReply(pending, envelope.body);
  }

  private onConnectionLevel(envelope: proto.Envelope): void {
    const body = envelope.body;
    switch (body.case) {
      case "notification": {
        let payload: JsValue;
        try {
          if (body.value.payload === undefined) {
            throw new InvalidArgumentError("no payload (§6.4.3)");
          }
          payload = valueFromProto(body.value.payload, "notification payload");
        } catch (err) {
          // §6.4.7: a bad notification is dropped; it does not end the session.
          this.events.push({ type: "connectionError", error: err as FedprotoError });
          return;
        }
        this.events.push({ type: "notification", topic: body.value.topic, payload });
        return;
      }
      case "goodbye":
        // §6.3.7: no new requests on this connection; those held back can never go out.
        if (this.stateValue === "open") {
          this.stateValue = "closing";
        }
        this.failWaiting(new UnavailableError("the server said goodbye before the request was sent (§6.3.7)"));
        this.events.push({ type: "goodbye", reason: body.value.reason });
        return;
      case "error":
        // §5.2, §3.7.3: never a request's terminal reply, whatever details.request_id says.
        this.events.push({ type: "connectionError", error: errorFromProto(body.value) });
        return;
      default:
        return; // unknown bodies (§3.6.5) and anything else without a request are ignored
    }
  }

  private onReply(pending: Pending, body: Body): void {
    switch (body.case) {
      case undefined:
        return; // a body newer than this client: an event it does not know, never terminal (§3.6.5)
      case "chunk":
        if (pending.kind !== "getObject") {
          this.unexpected(pending, "a chunk");
          return;
        }
        this.onDownloadChunk(pending, body.value);
        return;
      case "fitProgress":
        if (pending.kind !== "fit") {
          this.unexpected(pending, "a fit_progress");
          return;
        }
        if (!pending.settled) {
          pending.callbacks.progress?.(body.value);
        }
        return;
      case "notification":
      case "goodbye":
        return; // carry request_id 0 by rule; ignored with any other id
      default:
        break;
    }
    // The terminal reply (§5.3.1): the slot and the id are free again.
    this.inFlightMap.delete(pending.id);
    if (!pending.settled) {
      if (body.case === "error") {
        this.settle(pending, { ok: false, error: errorFromProto(body.value) });
      } else if (body.case !== pending.reply) {
        this.settle(pending, {
          ok: false,
          error: new InternalError(`the server answered ${bodyName(pending.kind)} with ${bodyName(body.case)} (§5.3.7)`),
        });
      } else if (body.case === "getObjectReply") {
        this.finishDownload(pending, body.value);
      } else {
        this.settle(pending, { ok: true, body });
      }
    }
    this.dispatchWaiting();
  }

  /** A chunk or progress event for a request that has none (§5.3.2): fail it and cancel it (§5.3.7). */
  private unexpected(pending: Pending, what: string): void {
    this.cancel(
      pending.id,
      new InternalError(`the server sent ${what} for a ${bodyName(pending.kind)} request (§5.3.2)`),
      "unexpected message",
    );
  }

  private onDownloadChunk(pending: Pending, chunk: proto.Chunk): void {
    if (pending.settled) {
      return; // cancelled: the rest is discarded (§7.3.23)
    }
    try {
      if (pending.download === undefined) {
        if (chunk.totalBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
          throw new InvalidArgumentError(`total_bytes ${chunk.totalBytes} is too large to hold`);
        }
        pending.download = new ChunkAssembler({
          totalBytes: Number(chunk.totalBytes),
          maxChunkBytes: this.server!.limits.chunkBytes,
          trailingDigest: "ignore", // §7.3.29: the digest is in the reply
          algorithm: this.server!.digest,
        });
      }
      pending.download.push(chunk);
      pending.callbacks.transfer?.(pending.download.receivedBytes, pending.download.totalBytes);
    } catch (err) {
      // §7.3.33: a broken download is DATA_LOSS; the rest of it is not needed.
      const message = err instanceof Error ? err.message : String(err);
      this.cancel(pending.id, new DataLossError(`download of a broken chunked payload: ${message}`), "bad chunk");
    }
  }

  private finishDownload(pending: Pending, reply: proto.GetObjectReply): void {
    const info = reply.info?.tensor;
    try {
      if (info === undefined) {
        throw new InternalError("the GetObjectReply carries no info.tensor (§9.3.4)");
      }
      const algorithm = this.server!.digest;
      const expected = carriedDigest(info, algorithm);
      let tensor: HostTensor;
      if (reply.tensor !== undefined) {
        if (pending.download !== undefined) {
          throw new DataLossError("chunks arrived, then an inline tensor (§7.3.15)");
        }
        tensor = tensorFromProto(reply.tensor, "downloaded tensor");
        // §7.3.34: an inline digest, when given, is checked too (under the connection's algorithm, §7.5.8).
        if (expected.length > 0 && !bytesEqual(digestOf(algorithm, tensor.data), expected)) {
          throw new DataLossError(`the inline tensor does not match its ${algorithm} digest`);
        }
      } else {
        let data: Uint8Array;
        if (pending.download === undefined) {
          if (info.nbytes !== 0n) {
            throw new DataLossError(`no chunk arrived for a payload of ${info.nbytes} bytes (§7.3.22)`);
          }
          if (expected.length > 0 && !bytesEqual(expected, digestOf(algorithm, new Uint8Array(0)))) {
            throw new DataLossError("the digest of an empty payload is wrong (§7.3.11)");
          }
          data = new Uint8Array(0);
        } else {
          if (BigInt(pending.download.totalBytes) !== info.nbytes) {
            throw new DataLossError(`chunks announced ${pending.download.totalBytes} bytes, the reply ${info.nbytes} (§7.3.22)`);
          }
          data = pending.download.finish(expected);
        }
        tensor = HostTensor.create(info.dtype, info.shape, data);
      }
      this.settle(pending, { ok: true, body: { case: "getObjectReply", value: reply }, tensor });
    } catch (err) {
      const error = err instanceof FedprotoError ? err : new DataLossError(err instanceof Error ? err.message : String(err));
      // A tensor that breaks §7.2 cannot be taken for the object either (§7.2.9).
      this.settle(pending, { ok: false, error: error instanceof InvalidArgumentError ? new DataLossError(error.message) : error });
    } finally {
      pending.download = undefined;
    }
  }

  // -- internals --------------------------------------------------------------------------------------

  private checkOpen(): void {
    if (this.stateValue === "open") {
      return;
    }
    if (this.stateValue === "closing") {
      throw new UnavailableError("the session is closing: no new requests (§6.3.7)");
    }
    if (this.stateValue === "closed") {
      throw new ConnectionClosedError("the connection is closed");
    }
    throw new UnavailableError("the handshake has not completed (§4.1.6)");
  }

  /** The next id not in use (§5.1.3), counting up from 2 (§5.1.7). */
  private allocateId(): bigint {
    const id = this.peekId();
    this.nextId = id + 1n;
    return id;
  }

  private peekId(): bigint {
    let id = this.nextId;
    while (this.inFlightMap.has(id) || this.waiting.some((p) => p.id === id)) {
      id++;
    }
    return id;
  }

  /** Sends held-back requests while the in-flight limit allows (§5.5.7). */
  private dispatchWaiting(now?: number): void {
    if (this.stateValue !== "open") {
      return;
    }
    const limit = this.server!.limits.maxInFlight;
    while (this.waiting.length > 0 && this.inFlightMap.size < limit) {
      const pending = this.waiting.shift()!;
      const envelope = pending.envelope!;
      let frame = pending.frame!;
      if (pending.deadlineAt !== undefined) {
        const remaining = pending.deadlineAt - (now ?? Date.now());
        if (remaining <= 0) {
          // §5.6.10: the deadline passed in line; it is not sent, and there is nothing to cancel.
          this.settle(pending, { ok: false, error: new DeadlineExceededError("the deadline passed before the request could be sent (§5.6.10)") });
          continue;
        }
        // §5.6.8: what remains of the caller's deadline when the request goes out, at least 1 ms.
        envelope.deadlineMs = BigInt(Math.max(1, Math.ceil(remaining)));
        frame = encodeEnvelope(envelope);
      }
      pending.envelope = undefined;
      pending.frame = undefined;
      this.inFlightMap.set(pending.id, pending);
      this.frames.push(frame);
      if (pending.upload !== undefined) {
        this.uploads.push(pending);
      }
    }
  }

  private failWaiting(error: FedprotoError): void {
    const held = this.waiting.splice(0);
    for (const pending of held) {
      this.settle(pending, { ok: false, error });
    }
  }

  private settle(pending: Pending, outcome: Outcome): void {
    if (pending.settled) {
      return;
    }
    pending.settled = true;
    pending.callbacks.settle(outcome);
  }

  private violation(closeCode: number, message: string): void {
    this.events.push({ type: "protocolViolation", closeCode, message });
  }
}
