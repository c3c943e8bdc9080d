/**
 * The protocol core of one server-side connection (docs/protocol.md §3 to §6, §13 to §16), with no I/O.
 *
 * A {@link ServerSession} takes in what the WebSocket layer received (`receiveBinary`, `receiveText`,
 * `connectionClosed`) and hands out what to send through a {@link SessionOutput} (`send` one binary
 * frame, `close` with a code). It owns every session rule: handshake first, version negotiation, tokens,
 * request ids unique among requests in flight, exactly one terminal reply per request, cancel, deadlines,
 * the in-flight limit, the client's frame limit, goodbye and shutdown. What a request *does* is left to a
 * {@link RequestHandler} (the worker's services), which sees only a {@link RequestContext}.
 *
 * States, and the moves between them (an illegal move is a bug and throws {@link SessionStateError}):
 *
 * | from        | to                                  | on                                                |
 * |-------------|-------------------------------------|---------------------------------------------------|
 * | awaitHello  | open, closed                        | a good Hello / a failed handshake or a close      |
 * | open        | draining, closed                    | server shutdown / goodbye, close                  |
 * | draining    | closed                              | grace period over or nothing left in flight       |
 */
import { create } from "@bufbuild/protobuf";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import {
  CONTROL_BODIES,
  REQUEST_KINDS,
  SERVER_ONLY_BODIES,
  bodyName,
  decodeEnvelope,
  encodeEnvelope,
  hasUnknownFields,
  makeEnvelope,
  type Body,
  type BodyCase,
  type Capability,
} from "../wire/envelope.js";
import {
  CancelledError,
  DeadlineExceededError,
  FailedPreconditionError,
  FedprotoError,
  InternalError,
  InvalidArgumentError,
  MalformedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
  UnimplementedError,
  UnsupportedVersionError,
  asFedprotoError,
  errorToProto,
} from "../wire/errors.js";
import { chooseDigest } from "../wire/digests.js";
import { limitsToProto, type Limits } from "../wire/limits.js";
import {
  GoodbyeSchema,
  NotificationSchema,
  WelcomeSchema,
  type Chunk as ProtoChunk,
  type Envelope as ProtoEnvelope,
  type Hello as ProtoHello,
} from "../wire/proto.js";
import { valueToProto, type ValueInput } from "../wire/values.js";

/** WebSocket close codes the server uses (§16.1). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
} as const;

/** The protocol versions this implementation speaks (§4.2). */
export const SUPPORTED_VERSIONS: readonly number[] = [1];

/** The smallest client frame limit a server honours (§4.6.3). */
export const MIN_CLIENT_FRAME_BYTES = 1024;

/** Details keys the spec requires on some Errors (§13.1.3); kept when an Error is shortened. */
const REQUIRED_DETAILS = ["supported", "request_id"];

/** The identity of every client of a server without tokens (§15.2.2). */
export const ANONYMOUS = "anonymous";

/** Where a session sends what it produces; implemented by the WebSocket shell (or a test). */
export interface SessionOutput {
  /** Send one binary message holding exactly one encoded envelope. */
  send(frame: Uint8Array): void;
  /** Close the connection with a WebSocket close code (after everything sent before). */
  close(code: number, reason: string): void;
}

/** Maps bearer tokens to identities with a comparison whose time does not depend on the token (§15.1.2). */
export class TokenTable {
  private readonly entries: { digest: Buffer; identity: string }[];

  /** `tokens` maps each token to its identity (several tokens may share one identity). */
  constructor(tokens: ReadonlyMap<string, string>) {
    this.entries = [...tokens].map(([token, identity]) => ({ digest: digestOf(token), identity }));
  }

  /** True when at least one token is configured (tokens are then required). */
  get required(): boolean {
    return this.entries.length > 0;
  }

  /**
   * The identity of `token`, or undefined. Every configured token is compared, each in constant time on
   * SHA-256 digests (equal lengths, so `timingSafeEqual` applies and no prefix match shortens the work).
   */
  identityOf(token: string): string | undefined {
    const digest = digestOf(token);
    let found: string | undefined;
    for (const entry of this.entries) {
      if (timingSafeEqual(entry.digest, digest) && found === undefined) {
        found = entry.identity;
      }
    }
    return found;
  }
}

function digestOf(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}

/** A request that failed in a way the server did not anticipate, as the server's log sees it (§13.1.7). */
export interface RequestFailure {
  /** The short random id sent to the client in `details.error_id` and in the message. */
  readonly errorId: string;
  /** The identity of the connection. */
  readonly identity: string;
  /** The request's body kind, as the spec writes it (`call`). */
  readonly kind: string;
  /** What was thrown (a bug, or an exposed method failing without a protocol code). */
  readonly error: unknown;
}

/** What a session needs to know about its server. */
export interface SessionConfig {
  serverId: string;
  serverName: string;
  capabilities: readonly Capability[];
  limits: Readonly<Limits>;
  tokens: TokenTable;
  /**
   * Send the text of unexpected failures to clients (for development). Default false: a generic INTERNAL
   * with an error id (§13.1.7, §11.4.3).
   */
  exposeErrors?: boolean;
  /** Told of every unexpected failure with its error id, so the log can be matched with a user's report. */
  onFailure?: (failure: RequestFailure) => void;
}

/**
 * The INTERNAL a client gets for a failure the server did not anticipate (§13.1.7): a generic message and a
 * short random error id (in the message and in `details.error_id`), or, with `expose`, the failure's own
 * name and text beside the id. Typed protocol errors are not unanticipated: they go out as raised (§11.4.1).
 */
export function internalErrorFor(thrown: unknown, errorId: string, expose: boolean): InternalError {
  let message = `the worker failed to handle the request (error id ${errorId}; its log has the details)`;
  if (expose) {
    const text = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : String(thrown);
    message = `${text} (error id ${errorId})`;
  }
  return new InternalError(message, { details: { error_id: errorId }, cause: thrown });
}

/** What a request handler may do while it runs. */
export interface RequestContext<C extends BodyCase = BodyCase> {
  readonly requestId: bigint;
  /** The request's body. */
  readonly body: Extract<Body, { case: C }>;
  /** The identity of the connection (§15.2). */
  readonly identity: string;
  /** The session's limits. */
  readonly limits: Readonly<Limits>;
  /** The client's `Hello.max_frame_bytes`, 0 for none (§3.4.4). */
  readonly clientMaxFrameBytes: number;
  /** The payload digest algorithm chosen in the handshake (§7.5.4). */
  readonly digest: string;
  /** Aborted (with the typed error as reason) when the request is cancelled, expires or the connection ends. */
  readonly signal: AbortSignal;
  /** True once the request has had its terminal reply (or was ended by cancel, deadline or close). */
  readonly ended: boolean;
  /**
   * Sends a non-terminal `chunk` with this request's id (downloads, §7.3.16). Resolves once the shell may
   * take more; throws the abort reason when the request has ended.
   */
  sendChunk(chunk: ProtoChunk): Promise<void>;
  /**
   * Routes this request's client `chunk` envelopes (uploads, §7.3.3) to `receiver` until the request ends.
   * A receiver that throws ends the request with that error.
   */
  receiveChunks(receiver: (chunk: ProtoChunk) => void): void;
  /** Pushes a `Notification` (request id 0) to this connection (§6.4); throws when it cannot be sent. */
  notify(topic: string, payload: ValueInput): void;
}

/** Runs the requests a session accepted; resolves with the terminal reply body or throws a protocol error. */
export type RequestHandler = (ctx: RequestContext) => Promise<Body>;

/** A move the state table does not allow: a bug in the server, never the client's fault. */
export class SessionStateError extends Error {
  constructor(from: SessionState, to: SessionState, event: string) {
    super(`server session cannot move from ${from} to ${to} on ${event}`);
    this.name = "SessionStateError";
  }
}

/** The states of a session. */
export type SessionState = "awaitHello" | "open" | "draining" | "closed";

const TRANSITIONS: Readonly<Record<SessionState, readonly SessionState[]>> = {
  awaitHello: ["open", "closed"],
  open: ["draining", "closed"],
  draining: ["closed"],
  closed: [],
};

interface InFlight {
  readonly requestId: bigint;
  /** The body kind, as the spec writes it (for the log). */
  readonly kind: string;
  readonly controller: AbortController;
  deadline: NodeJS.Timeout | undefined;
  chunkReceiver: ((chunk: ProtoChunk) => void) | undefined;
  ended: boolean;
}

/** One connection's protocol state machine. */
export class ServerSession {
  private state: SessionState = "awaitHello";
  private readonly inFlight = new Map<bigint, InFlight>();
  private identityName = "";
  private clientMaxFrame = 0;
  private digestAlgorithm = "sha256";
  private handshakeTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private drainResolve: (() => void) | undefined;
  private drainFinishing = false;

  constructor(
    private readonly config: SessionConfig,
    private readonly handler: RequestHandler,
    private readonly output: SessionOutput,
    /** Waits until the transport can take more (backpressure); resolves at once by default. */
    private readonly writable: () => Promise<void> = () => Promise.resolve(),
  ) {
    const seconds = config.limits.handshakeTimeoutSeconds;
    if (seconds > 0) {
      // §4.5.1: no Hello in time closes with 1008.
      this.handshakeTimer = setTimeout(() => this.closeWith(CloseCode.POLICY_VIOLATION, "no hello in time"), seconds * 1000);
      this.handshakeTimer.unref();
    }
  }

  /** The current state. */
  get currentState(): SessionState {
    return this.state;
  }

  /** The identity after a successful handshake, else "". */
  get identity(): string {
    return this.identityName;
  }

  /** The number of requests in flight. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  private moveTo(to: SessionState, event: string): void {
    if (!TRANSITIONS[this.state].includes(to)) {
      throw new SessionStateError(this.state, to, event);
    }
    this.state = to;
  }

  // -- input -------------------------------------------------------------------------------------------

  /** A text message arrived: close with 1003 (§3.2.1). */
  receiveText(): void {
    if (this.state === "closed") return;
    this.closeWith(CloseCode.UNSUPPORTED_DATA, "text frames are not allowed");
  }

  /**
   * A binary message arrived. (Messages above `max_frame_bytes` never get here: the shell's WebSocket
   * layer closes with 1009 first, §3.4.1, §3.1.3.)
   */
  receiveBinary(frame: Uint8Array): void {
    if (this.state === "closed") return;
    this.touch();
    let envelope: ProtoEnvelope;
    try {
      envelope = decodeEnvelope(frame);
    } catch (err) {
      // §3.3.1, §3.3.5: MALFORMED with request id 0, connection stays open, before and after Hello.
      this.sendError(0n, asFedprotoError(err));
      return;
    }
    if (this.state === "awaitHello") {
      this.receiveBeforeHandshake(envelope);
    } else {
      this.receiveAfterHandshake(envelope);
    }
  }

  /** The connection closed (either side): every request in flight ends without a reply (§5.3.6). */
  connectionClosed(): void {
    if (this.state === "closed") return;
    this.moveTo("closed", "connection closed");
    this.clearTimers();
    for (const request of [...this.inFlight.values()]) {
      this.endWithoutReply(request, new CancelledError("the connection closed"));
    }
    this.drainResolve?.();
  }

  /**
   * Server shutdown (§6.3.3 to §6.3.6): say goodbye, answer new requests with UNAVAILABLE, let requests in
   * flight finish for `graceMs`, end the rest with UNAVAILABLE, and close with 1001. Resolves when closed.
   */
  shutdown(graceMs: number): Promise<void> {
    if (this.state === "closed") return Promise.resolve();
    if (this.state === "awaitHello") {
      this.closeWith(CloseCode.GOING_AWAY, "server shutting down");
      return Promise.resolve();
    }
    if (this.state === "draining") {
      return new Promise((resolve) => {
        const previous = this.drainResolve;
        this.drainResolve = () => {
          previous?.();
          resolve();
        };
      });
    }
    this.moveTo("draining", "shutdown");
    this.sendEnvelope(makeEnvelope(0n, { case: "goodbye", value: create(GoodbyeSchema, { reason: "server shutting down" }) }));
    return new Promise((resolve) => {
      this.drainResolve = resolve;
      this.drainTimer = setTimeout(() => this.finishDrain(), Math.max(0, graceMs));
      this.maybeFinishDrain();
    });
  }

  // -- handshake (§4) ----------------------------------------------------------------------------------

  private receiveBeforeHandshake(envelope: ProtoEnvelope): void {
    const body = envelope.body;
    if (body.case !== "hello") {
      // §4.4.1 to §4.4.3: anything but hello (including no body or an unknown body) before the handshake.
      this.failHandshake(
        envelope.requestId,
        new FailedPreconditionError(`the first message must be hello, not ${bodyName(body.case)}`),
        CloseCode.PROTOCOL_ERROR,
      );
      return;
    }
    this.handshake(envelope.requestId, body.value);
  }

  private handshake(requestId: bigint, hello: ProtoHello): void {
    // §4.1.5: request id, then versions, then token.
    if (requestId === 0n) {
      this.failHandshake(0n, new InvalidArgumentError("hello must carry a non-zero request_id"), CloseCode.PROTOCOL_ERROR);
      return;
    }
    const common = hello.versions.filter((v) => SUPPORTED_VERSIONS.includes(v));
    if (common.length === 0) {
      const supported = SUPPORTED_VERSIONS.join(",");
      this.failHandshake(
        requestId,
        new UnsupportedVersionError(`no common protocol version; this server speaks ${supported}`, {
          details: { supported },
        }),
        CloseCode.PROTOCOL_ERROR,
      );
      return;
    }
    let identity = ANONYMOUS;
    if (this.config.tokens.required) {
      const found = hello.token === "" ? undefined : this.config.tokens.identityOf(hello.token);
      if (found === undefined) {
        // §15.1.5: the same words whatever the token was.
        this.failHandshake(requestId, new UnauthenticatedError("a valid token is required"), CloseCode.POLICY_VIOLATION);
        return;
      }
      identity = found;
    }
    this.identityName = identity;
    const asked = hello.maxFrameBytes > BigInt(Number.MAX_SAFE_INTEGER) ? 0 : Number(hello.maxFrameBytes);
    // §4.6.3: a non-zero limit below 1024 reads as 1024 (the Welcome and a short Error always fit).
    this.clientMaxFrame = asked === 0 ? 0 : Math.max(asked, MIN_CLIENT_FRAME_BYTES);
    // §7.5.4: the client's first algorithm this server computes; unknown names never fail the handshake
    this.digestAlgorithm = chooseDigest(hello.digests);
    if (this.handshakeTimer !== undefined) clearTimeout(this.handshakeTimer);
    this.moveTo("open", "hello");
    const welcome = create(WelcomeSchema, {
      version: Math.max(...common),
      serverId: this.config.serverId,
      serverName: this.config.serverName,
      capabilities: [...this.config.capabilities],
      limits: limitsToProto(this.config.limits),
      identity,
      digest: this.digestAlgorithm,
    });
    this.sendEnvelope(makeEnvelope(requestId, { case: "welcome", value: welcome }));
    this.touch();
  }

  private failHandshake(requestId: bigint, error: FedprotoError, closeCode: number): void {
    // §16.2.1: the Error goes out before the close frame; later envelopes are discarded (§4.1.7).
    this.sendError(requestId, error);
    this.closeWith(closeCode, error.codeName.toLowerCase());
  }

  // -- after the handshake -----------------------------------------------------------------------------

  private receiveAfterHandshake(envelope: ProtoEnvelope): void {
    const requestId = envelope.requestId;
    const body = envelope.body;
    if (body.case === undefined) {
      // §3.6.1: a newer body kind arrives as unknown fields; §3.5.1: otherwise there is simply no body.
      const error = hasUnknownFields(envelope)
        ? new UnimplementedError("unknown body kind")
        : new MalformedError("the envelope has no body");
      this.rejectEnvelope(requestId, error);
      return;
    }
    if (SERVER_ONLY_BODIES.has(body.case)) {
      this.rejectEnvelope(requestId, new InvalidArgumentError(`${bodyName(body.case)} is sent only by servers (§3.7.1)`));
      return;
    }
    if (CONTROL_BODIES.has(body.case)) {
      this.receiveControl(requestId, body);
      return;
    }
    const kind = REQUEST_KINDS.get(body.case);
    if (kind === undefined) {
      this.rejectEnvelope(requestId, new UnimplementedError(`${bodyName(body.case)} is not implemented`));
      return;
    }
    this.receiveRequest(envelope, body.case, kind.capability);
  }

  /** §3.7.3: an Error for a rejected envelope whose id names a request in flight goes out with id 0. */
  private rejectEnvelope(requestId: bigint, error: FedprotoError): void {
    if (requestId !== 0n && this.inFlight.has(requestId)) {
      error.details.request_id = requestId.toString();
      this.sendError(0n, error);
    } else {
      this.sendError(requestId, error);
    }
  }

  private receiveControl(requestId: bigint, body: Body): void {
    switch (body.case) {
      case "cancel": {
        // §6.2.3, §6.2.6: stop the request if it is in flight, otherwise ignore.
        const request = this.inFlight.get(requestId);
        if (request !== undefined && requestId !== 0n) {
          this.endWithError(request, new CancelledError("cancelled by the client"));
        }
        return;
      }
      case "goodbye": {
        // §6.3.2: cancel everything in flight (with CANCELLED), then close with 1000.
        for (const request of [...this.inFlight.values()]) {
          this.endWithError(request, new CancelledError("the client said goodbye"));
        }
        this.closeWith(CloseCode.NORMAL, "goodbye");
        return;
      }
      case "chunk": {
        // §7.3.12: chunks of no upload in progress are ignored.
        const request = this.inFlight.get(requestId);
        if (request?.chunkReceiver === undefined || request.ended) return;
        try {
          request.chunkReceiver(body.value);
        } catch (err) {
          this.endWithError(request, this.protocolErrorOf(err, request));
        }
        return;
      }
      default:
        return;
    }
  }

  private receiveRequest(envelope: ProtoEnvelope, bodyCase: BodyCase, capability: Capability | undefined): void {
    const requestId = envelope.requestId;
    if (requestId === 0n) {
      // §5.1.5: not run, answered with id 0.
      this.sendError(0n, new InvalidArgumentError(`${bodyName(bodyCase)} needs a non-zero request_id`));
      return;
    }
    if (this.inFlight.has(requestId)) {
      // §5.2: the duplicate is not run; the original goes on.
      this.sendError(
        0n,
        new InvalidArgumentError(`request_id ${requestId} is already in flight`, {
          details: { request_id: requestId.toString() },
        }),
      );
      return;
    }
    if (bodyCase === "hello") {
      // §4.4.4: the first handshake stays in force.
      this.sendError(requestId, new FailedPreconditionError("the handshake is already done"));
      return;
    }
    if (this.state === "draining") {
      this.sendError(requestId, new UnavailableError("the server is shutting down")); // §6.3.5
      return;
    }
    const maxInFlight = this.config.limits.maxInFlight;
    if (this.inFlight.size >= maxInFlight) {
      // §5.5.1, §5.5.6
      this.sendError(
        requestId,
        new ResourceExhaustedError(`${maxInFlight} requests already in flight`, { details: { limit: String(maxInFlight) } }),
      );
      return;
    }
    if (capability !== undefined && !this.config.capabilities.includes(capability)) {
      // §3.6.2, §3.6.3
      this.sendError(
        requestId,
        new UnimplementedError(`${bodyName(bodyCase)} needs the capability ${capability}, which this server does not offer`),
      );
      return;
    }
    const request: InFlight = {
      requestId,
      kind: bodyName(bodyCase),
      controller: new AbortController(),
      deadline: undefined,
      chunkReceiver: undefined,
      ended: false,
    };
    this.inFlight.set(requestId, request);
    const deadlineMs = envelope.deadlineMs;
    if (deadlineMs > 0n && this.config.capabilities.includes("deadlines")) {
      // §5.6.2; deadlines beyond what a timer holds (about 24.8 days) never fire in practice.
      const ms = deadlineMs > 2_147_483_647n ? undefined : Number(deadlineMs);
      if (ms !== undefined) {
        request.deadline = setTimeout(
          () => this.endWithError(request, new DeadlineExceededError(`the deadline of ${ms} ms passed`)),
          ms,
        );
      }
    }
    this.run(request, this.makeContext(request, envelope.body));
  }

  private makeContext(request: InFlight, body: Body): RequestContext {
    const session = this;
    return {
      requestId: request.requestId,
      body: body as RequestContext["body"],
      identity: this.identityName,
      limits: this.config.limits,
      clientMaxFrameBytes: this.clientMaxFrame,
      digest: this.digestAlgorithm,
      signal: request.controller.signal,
      get ended() {
        return request.ended;
      },
      async sendChunk(chunk: ProtoChunk): Promise<void> {
        if (request.ended) throw request.controller.signal.reason ?? new CancelledError("request ended");
        session.sendEnvelope(makeEnvelope(request.requestId, { case: "chunk", value: chunk }));
        await session.writable();
        if (request.ended) throw request.controller.signal.reason ?? new CancelledError("request ended");
      },
      receiveChunks(receiver: (chunk: ProtoChunk) => void): void {
        request.chunkReceiver = receiver;
      },
      notify(topic: string, payload: ValueInput): void {
        if (!session.config.capabilities.includes("notifications")) {
          // §6.4.2, §18.2.9
          throw new UnimplementedError("this server does not send notifications (capability notifications)");
        }
        const notification = create(NotificationSchema, { topic, payload: valueToProto(payload, "notification payload") });
        const frame = encodeEnvelope(makeEnvelope(0n, { case: "notification", value: notification }));
        if (session.clientMaxFrame > 0 && frame.length > session.clientMaxFrame) {
          throw new ResourceExhaustedError(
            `the notification (${frame.length} bytes) exceeds the client's max_frame_bytes ${session.clientMaxFrame}`,
            { details: { limit: String(session.clientMaxFrame) } },
          );
        }
        if (session.state === "closed") throw new UnavailableError("the connection is closed");
        session.output.send(frame);
      },
    };
  }

  private run(request: InFlight, ctx: RequestContext): void {
    let promise: Promise<Body>;
    try {
      promise = this.handler(ctx);
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (reply) => this.endWithReply(request, reply),
      (err: unknown) => this.endWithError(request, this.protocolErrorOf(err, request)),
    );
  }

  /**
   * What a request that threw ends with: a protocol error as it is (§11.4.1); anything else is a failure the
   * server did not anticipate, answered with a generic INTERNAL and an error id that `onFailure` logs beside
   * the failure, or with its own text when the owner chose to expose it (§13.1.7, §11.4.3).
   */
  private protocolErrorOf(thrown: unknown, request: InFlight): FedprotoError {
    if (thrown instanceof FedprotoError) return thrown;
    const errorId = randomBytes(4).toString("hex");
    this.config.onFailure?.({ errorId, identity: this.identityName, kind: request.kind, error: thrown });
    return internalErrorFor(thrown, errorId, this.config.exposeErrors === true);
  }

  // -- ending requests (§5.3: exactly one terminal reply) ------------------------------------------------

  private finish(request: InFlight, reason: FedprotoError): boolean {
    if (request.ended) return false;
    request.ended = true;
    if (request.deadline !== undefined) clearTimeout(request.deadline);
    request.chunkReceiver = undefined;
    this.inFlight.delete(request.requestId);
    if (!request.controller.signal.aborted) request.controller.abort(reason);
    return true;
  }

  private endWithReply(request: InFlight, reply: Body): void {
    if (request.ended) return;
    const envelope = makeEnvelope(request.requestId, reply);
    const frame = encodeEnvelope(envelope);
    if (this.clientMaxFrame > 0 && frame.length > this.clientMaxFrame) {
      // §14.2.4: a reply the client would refuse becomes RESOURCE_EXHAUSTED.
      this.endWithError(
        request,
        new ResourceExhaustedError(
          `the ${bodyName(reply.case)} (${frame.length} bytes) exceeds the client's max_frame_bytes ${this.clientMaxFrame}`,
          { details: { limit: String(this.clientMaxFrame) } },
        ),
      );
      return;
    }
    this.finish(request, new CancelledError("request finished"));
    if (this.state !== "closed") this.output.send(frame);
    this.maybeFinishDrain();
  }

  private endWithError(request: InFlight, error: FedprotoError): void {
    if (!this.finish(request, error)) return;
    this.sendError(request.requestId, error);
    this.maybeFinishDrain();
  }

  private endWithoutReply(request: InFlight, reason: FedprotoError): void {
    this.finish(request, reason);
  }

  // -- output ------------------------------------------------------------------------------------------

  private sendEnvelope(envelope: ProtoEnvelope): void {
    if (this.state === "closed") return;
    this.output.send(encodeEnvelope(envelope));
  }

  private sendError(requestId: bigint, error: FedprotoError): void {
    if (this.state === "closed") return;
    this.output.send(this.errorFrame(requestId, error));
  }

  /**
   * The frame of an Error, shortened to the client's limit when needed (§13.1.6): first only the required
   * details and as much of the message as fits, then the code alone.
   */
  private errorFrame(requestId: bigint, error: FedprotoError): Uint8Array {
    const proto = errorToProto(error);
    const encode = (): Uint8Array => encodeEnvelope(makeEnvelope(requestId, { case: "error", value: proto }));
    let frame = encode();
    const limit = this.clientMaxFrame;
    if (limit === 0 || frame.length <= limit) return frame;
    proto.details = Object.fromEntries(Object.entries(proto.details).filter(([key]) => REQUIRED_DETAILS.includes(key)));
    const message = Buffer.from(proto.message, "utf8");
    proto.message = "";
    const room = limit - encode().length - 8; // 8: the message field's tag and length, generously
    if (room > 0) {
      // Cut at a character boundary: decoding a prefix drops an incomplete last character.
      proto.message = new TextDecoder().decode(message.subarray(0, room)).replace(/\uFFFD$/, "");
    }
    frame = encode();
    if (frame.length > limit) {
      proto.details = {};
      proto.message = "";
      frame = encode();
    }
    return frame;
  }

  private closeWith(code: number, reason: string): void {
    if (this.state === "closed") return;
    this.output.close(code, reason);
    this.connectionClosed();
  }

  // -- timers ------------------------------------------------------------------------------------------

  /** Any sign of life from the client (a frame, a WebSocket ping): restarts the idle timer (§4.5.2). */
  activity(): void {
    this.touch();
  }

  private touch(): void {
    const seconds = this.config.limits.idleTimeoutSeconds;
    if (seconds <= 0 || this.state === "closed") return;
    if (this.idleTimer !== undefined) {
      this.idleTimer.refresh();
      return;
    }
    this.idleTimer = setTimeout(() => this.idle(), seconds * 1000);
    this.idleTimer.unref();
  }

  private idle(): void {
    if (this.inFlight.size > 0) {
      // §4.5.3: not while a request is in flight; look again later.
      this.idleTimer?.refresh();
      return;
    }
    this.closeWith(CloseCode.GOING_AWAY, "idle timeout"); // §4.5.2
  }

  private maybeFinishDrain(): void {
    if (this.state === "draining" && !this.drainFinishing && this.inFlight.size === 0) this.finishDrain();
  }

  private finishDrain(): void {
    if (this.state !== "draining" || this.drainFinishing) return;
    this.drainFinishing = true;
    for (const request of [...this.inFlight.values()]) {
      this.endWithError(request, new UnavailableError("the server shut down")); // §6.3.4
    }
    this.closeWith(CloseCode.GOING_AWAY, "server shutting down"); // §6.3.6
  }

  private clearTimers(): void {
    for (const timer of [this.handshakeTimer, this.idleTimer, this.drainTimer]) {
      if (timer !== undefined) clearTimeout(timer);
    }
  }
}
