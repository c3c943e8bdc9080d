/**
 * The fedproto client for Node.js: a thin layer that moves frames between a WebSocket (`ws`) and a
 * {@link ClientSession}, and turns each request into a promise.
 *
 * ```ts
 * const client = await Client.connect("ws://127.0.0.1:9001", { token: "s3cret" });
 * const info = await client.send(new Float32Array([1, 2, 3]), { id: "w", tags: ["#weights"] });
 * const tensor = await client.get("w");
 * const result = await client.call("echo", [1n, 2.5], { k: "v" }, { signal: AbortSignal.timeout(1000) });
 * client.on("notification", (topic, payload) => console.log(topic, payload));
 * await client.close();
 * ```
 *
 * Every failure is a {@link FedprotoError} of the class of its code (`NotFoundError`, `CancelledError`,
 * ...); a lost connection is a {@link ConnectionClosedError} (UNAVAILABLE).
 */
import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import WebSocket from "ws";
import {
  CancelledError,
  DeadlineExceededError,
  FedprotoError,
  InternalError,
  mapEntriesToProto,
  proto,
  valueFromProto,
  valueToProto,
  type Body,
  type BodyCase,
  type BodyOf,
  type HostTensor,
  type JsValue,
  type ValueInput,
} from "../wire/index.js";
import { ConnectionClosedError } from "./errors.js";
import { ClientSession, type Outcome, type SessionEvent } from "./session.js";
import {
  datasetInfoFromProto,
  methodInfoFromProto,
  objectInfoFromProto,
  toHostTensor,
  type DatasetInfo,
  type MethodInfo,
  type ObjectInfo,
  type ServerInfo,
  type TensorInput,
} from "./types.js";

/** The WebSocket subprotocol of version 1 (§2.2.1). */
const SUBPROTOCOL = "fedproto.v1";

/** Options of {@link Client.connect}. */
export interface ClientOptions {
  /** The bearer token (§15.1); none by default. */
  token?: string;
  /** A name for the server's logs; `fedproto-node/0.1` by default. */
  clientName?: string;
  /**
   * The largest frame this client accepts, sent as `Hello.max_frame_bytes` (§3.4.4) and enforced on
   * receipt; 256 MiB by default, 0 for no limit, never below 1024 (§4.6.3).
   */
  maxFrameBytes?: number;
  /**
   * Payload digest algorithms to offer, in order of preference (§7.5.3); `["xxh3-128", "sha256"]` by
   * default. XXH3-128 catches accidental corruption only (§7.5.10): offer `["sha256"]` where a digest must
   * identify content.
   */
  digests?: readonly string[];
  /** Milliseconds to wait for the connection and the Welcome; 10 000 by default. */
  connectTimeoutMs?: number;
  /** A deadline for every request that does not give its own (§5.6); none by default. */
  defaultDeadlineMs?: number;
  /** Send a Ping when idle for half the server's idle timeout (§4.5.5); true by default. */
  keepAlive?: boolean;
  /** Extra options for the `ws` client (TLS settings for `wss://`, headers, ...). */
  webSocket?: WebSocket.ClientOptions;
}

/** Options of every request. */
export interface RequestOptions {
  /** Aborting it cancels the request (§6.2); the promise rejects with {@link CancelledError}. */
  signal?: AbortSignal;
  /** Milliseconds the caller will wait (§5.6); the promise rejects with {@link DeadlineExceededError}. */
  deadlineMs?: number;
}

/** Options of {@link Client.send}. */
export interface SendOptions extends RequestOptions {
  /** The id to store it under; the server chooses one when absent (§9.2.3). */
  id?: string;
  /** Tags for search (§9.8). */
  tags?: readonly string[];
  /** A free-form description. */
  description?: string;
  /** Replace an object with the same id instead of failing with ALREADY_EXISTS (§9.2.4). */
  overwrite?: boolean;
  /** The shape of a typed array (1-d by default). */
  shape?: readonly number[];
  /** Bytes sent so far of a chunked upload. */
  onProgress?: (sent: number, total: number) => void;
}

/** Options of {@link Client.get}. */
export interface GetOptions extends RequestOptions {
  /** Bytes received so far of a chunked download. */
  onProgress?: (received: number, total: number) => void;
}

/** The events a client emits. */
export interface ClientEvents {
  /** A notification the server pushed (§6.4), before any reply that arrived after it (§6.4.6). */
  notification: [topic: string, payload: JsValue];
  /** The server is shutting down (§6.3.3): no new requests; those in flight may still finish. */
  goodbye: [reason: string];
  /** A connection-level Error (request_id 0, §13.1.2) or a dropped notification; no request failed. */
  connectionError: [error: FedprotoError];
  /** The connection closed. */
  close: [code: number, reason: string];
}

/** A grace beyond the deadline before the client gives up on the server's own DEADLINE_EXCEEDED (§5.6.9). */
const DEADLINE_GRACE_MS = 1000;
/** Stop queueing upload chunks in the socket beyond this many bytes, and resume below half of it. */
const HIGH_WATER = 8 * 1024 * 1024;
/** How long close() waits for the server to close after the Goodbye (§16.2.2). */
const CLOSE_WAIT_MS = 5000;
const DEFAULT_MAX_FRAME = 256 * 1024 * 1024;

/** A close reason within the 123 bytes a close frame allows (RFC 6455 §5.5), cut at a character. */
function closeReason(text: string): string {
  let reason = text;
  while (Buffer.byteLength(reason) > 123) {
    reason = reason.slice(0, -1);
  }
  return reason;
}

/**
 * A connection to one fedproto server. Requests may be issued concurrently: up to the server's
 * `max_in_flight` go out at once, the rest wait in the client (§5.5.7).
 */
export class Client extends EventEmitter<ClientEvents> {
  private readonly ws: WebSocket;
  private readonly session: ClientSession;
  private readonly options: ClientOptions;
  private writing = false;
  private readonly writes: Promise<void>[] = [];
  private closed: Promise<void>;
  private keepAliveTimer: NodeJS.Timeout | undefined;
  private lastSent = Date.now();
  /** Told the handshake's outcome (undefined: a Welcome). */
  private onHandshake: ((error?: FedprotoError) => void) | undefined;

  private constructor(ws: WebSocket, session: ClientSession, options: ClientOptions) {
    super();
    this.ws = ws;
    this.session = session;
    this.options = options;
    this.closed = new Promise((resolve) => ws.once("close", () => resolve()));
  }

  /**
   * Opens a connection, says Hello and waits for the Welcome (§4.1.6). Rejects with the typed error of
   * a refused handshake (`UnauthenticatedError`, `UnsupportedVersionError`, ...) or a
   * {@link ConnectionClosedError}.
   */
  static async connect(url: string, options: ClientOptions = {}): Promise<Client> {
    new ClientSession().hello({ maxFrameBytes: options.maxFrameBytes ?? DEFAULT_MAX_FRAME }); // §4.6.3 checks, before any I/O
    try {
      return await Client.connectOnce(url, options, true);
    } catch (err) {
      // §2.2.4: `ws` refuses a server that selects no subprotocol when one was offered, which §2.2.3
      // allows; such a server is then reached without the offer.
      const cause = err instanceof ConnectionClosedError ? (err.cause as Error | undefined) : undefined;
      if (cause?.message === "Server sent no subprotocol") {
        return Client.connectOnce(url, options, false);
      }
      throw err;
    }
  }

  private static connectOnce(url: string, options: ClientOptions, offer: boolean): Promise<Client> {
    const maxFrame = options.maxFrameBytes ?? DEFAULT_MAX_FRAME;
    const ws = new WebSocket(url, offer ? SUBPROTOCOL : [], {
      perMessageDeflate: false, // §2.3.1
      maxPayload: maxFrame, // ws closes with 1009 above it (§3.4.5)
      handshakeTimeout: options.connectTimeoutMs ?? 10_000,
      ...options.webSocket,
    });
    ws.binaryType = "nodebuffer";
    const session = new ClientSession();
    const client = new Client(ws, session, options);
    return client.open(maxFrame);
  }

  private open(maxFrame: number): Promise<Client> {
    const timeoutMs = this.options.connectTimeoutMs ?? 10_000;
    return new Promise<Client>((resolve, reject) => {
      let done = false;
      const finish = (error?: FedprotoError): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.onHandshake = undefined;
        if (error === undefined) {
          resolve(this);
        } else {
          this.terminate();
          reject(error);
        }
      };
      const timer = setTimeout(
        () => finish(new ConnectionClosedError(`no Welcome within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.onHandshake = finish;
      this.ws.on("open", () => {
        this.session.hello({
          token: this.options.token ?? "",
          clientName: this.options.clientName ?? "fedproto-node/0.1",
          maxFrameBytes: maxFrame,
          ...(this.options.digests === undefined ? {} : { digests: this.options.digests }),
        });
        this.kick();
      });
      this.ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
      this.ws.on("error", (err: Error) => {
        // Connection failures surface here before "close"; the close handler fails the requests.
        finish(new ConnectionClosedError(`cannot connect: ${err.message}`, undefined, { cause: err }));
      });
      this.ws.on("close", (code: number, reason: Buffer) => this.onClose(code, reason.toString()));
    });
  }

  /** What the server said about itself in its Welcome. */
  get server(): ServerInfo {
    const server = this.session.server;
    if (server === undefined) {
      throw new ConnectionClosedError("no handshake");
    }
    return server;
  }

  /** Requests sent and not yet answered (cancelled ones until their reply arrives, §6.2.10). */
  get inFlight(): number {
    return this.session.inFlight;
  }

  /** Requests waiting in the client for an in-flight slot (§5.5.7). */
  get queued(): number {
    return this.session.queued;
  }

  // -- requests ---------------------------------------------------------------------------------------

  /** Round trip of a Ping (§6.1), in seconds. */
  async ping(options: RequestOptions = {}): Promise<number> {
    const payload = Uint8Array.from([0x66, 0x70]);
    const started = performance.now();
    const pong = await this.request({ case: "ping", value: create(proto.PingSchema, { payload }) }, "pong", options);
    if (Buffer.compare(Buffer.from(pong.payload), Buffer.from(payload)) !== 0) {
      throw new InternalError("the Pong's payload differs from the Ping's (§6.1.2)");
    }
    return (performance.now() - started) / 1000;
  }

  /**
   * Stores a tensor (§9.2): a {@link HostTensor}, or a typed array (1-d unless `shape` is given).
   * Large tensors travel in chunks (§7.3). Resolves with what the server stored.
   */
  async send(tensor: TensorInput, options: SendOptions = {}): Promise<ObjectInfo> {
    const host = toHostTensor(tensor, options.shape);
    const outcome = await this.run(
      (callbacks, submit) => this.session.submitSendObject(host, options, callbacks, submit),
      options,
      options.onProgress,
    );
    return objectInfoFromProto(this.expect(outcome, "sendObjectReply").info);
  }

  /** Fetches a stored tensor (§9.3), inline or in verified chunks (§7.3.22). */
  async get(id: string, options: GetOptions = {}): Promise<HostTensor> {
    return (await this.getObject(id, options)).tensor;
  }

  /** Fetches a stored tensor with its metadata. */
  async getObject(id: string, options: GetOptions = {}): Promise<{ tensor: HostTensor; info: ObjectInfo }> {
    const body: Body = { case: "getObject", value: create(proto.GetObjectRequestSchema, { id }) };
    const outcome = await this.run(
      (callbacks, submit) => this.session.submit(body, callbacks, submit),
      options,
      options.onProgress,
    );
    const reply = this.expect(outcome, "getObjectReply");
    if (!outcome.ok || outcome.tensor === undefined) {
      throw new InternalError("no tensor in the reply");
    }
    return { tensor: outcome.tensor, info: objectInfoFromProto(reply.info) };
  }

  /** Deletes a stored object (§9.4); resolves with the bytes freed. */
  async delete(id: string, options: RequestOptions = {}): Promise<number> {
    const reply = await this.request(
      { case: "deleteObject", value: create(proto.DeleteObjectRequestSchema, { id }) },
      "deleteObjectReply",
      options,
    );
    return Number(reply.freedBytes);
  }

  /** Every stored object of this identity, in insertion order (§9.5). */
  async listObjects(options: RequestOptions = {}): Promise<ObjectInfo[]> {
    const reply = await this.request(
      { case: "listObjects", value: create(proto.ListObjectsRequestSchema) },
      "listObjectsReply",
      options,
    );
    return reply.objects.map(objectInfoFromProto);
  }

  /** How many objects this identity stores (§9.6). */
  async count(options: RequestOptions = {}): Promise<number> {
    const reply = await this.request(
      { case: "countObjects", value: create(proto.CountObjectsRequestSchema) },
      "countObjectsReply",
      options,
    );
    return Number(reply.count);
  }

  /** Deletes every object of this identity (§9.7); resolves with how many were removed. */
  async clear(options: RequestOptions = {}): Promise<number> {
    const reply = await this.request(
      { case: "clearObjects", value: create(proto.ClearObjectsRequestSchema) },
      "clearObjectsReply",
      options,
    );
    return Number(reply.removed);
  }

  /** The objects that carry every one of `tags` (§9.8), in insertion order. */
  async search(tags: readonly string[], options: RequestOptions = {}): Promise<ObjectInfo[]> {
    const reply = await this.request(
      { case: "searchObjects", value: create(proto.SearchObjectsRequestSchema, { tags: [...tags] }) },
      "searchObjectsReply",
      options,
    );
    return reply.objects.map(objectInfoFromProto);
  }

  /**
   * Calls an exposed method (§11) with positional `args` and keyword `kwargs` (a `Map` or a plain
   * object, order kept). Integers are `bigint`, doubles `number` (§8.4.4). Resolves with the result.
   */
  async call(
    method: string,
    args: readonly ValueInput[] = [],
    kwargs: ReadonlyMap<string, ValueInput> | { readonly [key: string]: ValueInput } = {},
    options: RequestOptions = {},
  ): Promise<JsValue> {
    const request = create(proto.CallRequestSchema, {
      method,
      args: args.map((arg, i) => valueToProto(arg, `args[${i}]`)),
      kwargs: mapEntriesToProto(kwargs, "kwargs"),
    });
    const reply = await this.request({ case: "call", value: request }, "callReply", options);
    if (reply.result === undefined) {
      throw new InternalError("the CallReply carries no result (§11.5.1)");
    }
    return valueFromProto(reply.result, "result");
  }

  /** The exposed methods, sorted by name (§11.6). */
  async listMethods(options: RequestOptions = {}): Promise<MethodInfo[]> {
    const reply = await this.request(
      { case: "listMethods", value: create(proto.ListMethodsRequestSchema) },
      "listMethodsReply",
      options,
    );
    return reply.methods.map(methodInfoFromProto);
  }

  /** The datasets, sorted by key (§10.1). */
  async listDatasets(options: RequestOptions = {}): Promise<DatasetInfo[]> {
    const reply = await this.request(
      { case: "listDatasets", value: create(proto.ListDatasetsRequestSchema) },
      "listDatasetsReply",
      options,
    );
    return reply.datasets.map(datasetInfoFromProto);
  }

  // -- closing ----------------------------------------------------------------------------------------

  /**
   * Says goodbye (§6.3.1) and waits for the server to close (at most 5 s, then the client closes with
   * 1000, §16.2.2). Requests in flight end with CANCELLED (§6.3.2).
   */
  async close(reason = ""): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) {
      return;
    }
    if (this.ws.readyState === WebSocket.OPEN) {
      this.session.goodbye(reason);
      this.kick();
    }
    const timer = setTimeout(() => this.ws.close(1000, "goodbye"), CLOSE_WAIT_MS);
    try {
      await this.closed;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Drops the connection at once, without a Goodbye; requests in flight fail with UNAVAILABLE. */
  terminate(): void {
    this.ws.terminate();
  }

  // -- internals --------------------------------------------------------------------------------------

  private async request<R extends BodyCase>(body: Body, reply: R, options: RequestOptions): Promise<BodyOf<R>["value"]> {
    const outcome = await this.run((callbacks, submit) => this.session.submit(body, callbacks, submit), options);
    return this.expect(outcome, reply);
  }

  private expect<R extends BodyCase>(outcome: Outcome, reply: R): BodyOf<R>["value"] {
    if (!outcome.ok) {
      throw outcome.error;
    }
    if (outcome.body.case !== reply) {
      throw new InternalError(`expected ${reply}, got ${String(outcome.body.case)}`);
    }
    return outcome.body.value as BodyOf<R>["value"];
  }

  /**
   * Submits one request through `submit` and settles the promise from the session's callbacks; wires
   * the caller's AbortSignal (Cancel, §6.2) and deadline (§5.6) to it.
   */
  private run(
    submit: (
      callbacks: { settle(o: Outcome): void; transfer?(done: number, total: number): void },
      options: { deadlineAt?: number; now: number },
    ) => bigint,
    options: RequestOptions,
    onTransfer?: (done: number, total: number) => void,
  ): Promise<Outcome> {
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(new CancelledError("cancelled before it was sent", { cause: signal.reason }));
    }
    const deadlineMs = options.deadlineMs ?? this.options.defaultDeadlineMs;
    const now = Date.now();
    return new Promise<Outcome>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const callbacks = {
        settle: (outcome: Outcome): void => {
          if (timer !== undefined) clearTimeout(timer);
          if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
          resolve(outcome);
        },
        transfer: onTransfer,
      };
      let id: bigint;
      try {
        id = submit(callbacks, deadlineMs === undefined ? { now } : { deadlineAt: now + deadlineMs, now });
      } catch (err) {
        reject(err);
        return;
      }
      if (signal !== undefined) {
        onAbort = (): void => {
          this.session.cancel(id, new CancelledError("cancelled by the caller", { cause: signal.reason }), "aborted");
          this.kick();
        };
        signal.addEventListener("abort", onAbort, { once: true });
      }
      if (deadlineMs !== undefined) {
        // §5.6.9: a server that honours deadlines answers DEADLINE_EXCEEDED itself; the client's own
        // timer is the backstop (or the only deadline, §5.6.6), and sends a Cancel. A request still held
        // back when the deadline passes is not sent at all (§5.6.10).
        const grace = this.session.server?.capabilities.has("deadlines") ? DEADLINE_GRACE_MS : 0;
        const expire = (): void => {
          this.session.cancel(id, new DeadlineExceededError(`no reply within ${deadlineMs} ms`), "deadline");
          this.kick();
        };
        timer = setTimeout(() => {
          if (grace === 0 || this.session.isHeldBack(id)) {
            expire();
          } else {
            timer = setTimeout(expire, grace);
          }
        }, deadlineMs);
      }
      this.kick();
    });
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (!isBinary) {
      this.ws.close(1003, "text frames are not fedproto"); // §3.2.3
      return;
    }
    // A plain Uint8Array view of the Buffer, so that decoded bytes fields are Uint8Arrays (no copy).
    this.session.receive(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    this.handleEvents();
    this.kick();
  }

  private handleEvents(): void {
    for (const event of this.session.takeEvents()) {
      this.handleEvent(event);
    }
  }

  private handleEvent(event: SessionEvent): void {
    switch (event.type) {
      case "welcome":
        this.startKeepAlive(event.server);
        this.onHandshake?.();
        return;
      case "handshakeFailed":
        this.onHandshake?.(event.error);
        return;
      case "notification":
        this.emit("notification", event.topic, event.payload);
        return;
      case "goodbye":
        this.emit("goodbye", event.reason);
        return;
      case "connectionError":
        this.emit("connectionError", event.error);
        return;
      case "protocolViolation":
        this.ws.close(event.closeCode, closeReason(event.message));
        return;
    }
  }

  private onClose(code: number, reason: string): void {
    if (this.keepAliveTimer !== undefined) {
      clearInterval(this.keepAliveTimer);
    }
    this.session.connectionLost(code, reason);
    this.handleEvents();
    this.emit("close", code, reason);
  }

  private startKeepAlive(server: ServerInfo): void {
    const idle = server.limits.idleTimeoutSeconds;
    if (this.options.keepAlive === false || idle <= 0) {
      return;
    }
    const every = Math.max(50, (idle * 1000) / 2);
    this.keepAliveTimer = setInterval(() => {
      if (Date.now() - this.lastSent >= every * 0.9 && this.session.state === "open") {
        this.ping().catch(() => undefined);
      }
    }, every / 2);
    this.keepAliveTimer.unref();
  }

  /**
   * Writes what the session has to send: small frames first, then upload chunks, holding back while
   * more than {@link HIGH_WATER} bytes wait in the socket (uploads never starve a Ping, §5.4.4).
   */
  private kick(): void {
    if (this.writing || this.ws.readyState !== WebSocket.OPEN) {
      return;
    }
    this.writing = true;
    void this.pump()
      .catch(() => this.terminate())
      .finally(() => {
        this.writing = false;
        // A frame queued while the last await was pending: write it too.
        if (this.session.hasFrames && this.ws.readyState === WebSocket.OPEN) {
          this.kick();
        }
      });
  }

  private async pump(): Promise<void> {
    for (;;) {
      for (const frame of this.session.takeFrames()) {
        this.write(frame);
      }
      if (this.ws.bufferedAmount > HIGH_WATER) {
        await this.drain();
        continue;
      }
      const chunk = this.session.nextUploadChunk();
      if (chunk === undefined) {
        return;
      }
      this.write(chunk);
    }
  }

  private write(frame: Uint8Array): void {
    if (this.ws.readyState !== WebSocket.OPEN) {
      return;
    }
    this.lastSent = Date.now();
    this.writes.push(
      new Promise((resolve) => {
        this.ws.send(frame, { binary: true }, () => resolve());
      }),
    );
    if (this.writes.length > 4096) {
      this.writes.splice(0, this.writes.length - 4096);
    }
  }

  /** Waits until the socket holds less than half of {@link HIGH_WATER}. */
  private async drain(): Promise<void> {
    while (this.ws.bufferedAmount > HIGH_WATER / 2 && this.writes.length > 0 && this.ws.readyState === WebSocket.OPEN) {
      await this.writes.shift();
    }
    if (this.writes.length === 0 && this.ws.bufferedAmount > HIGH_WATER / 2) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }
}
