/**
 * The {@link Worker}: a fedproto server's configuration and services (datasets, exposed methods, object
 * stores, tokens, limits), and the sessions it opens. It runs over WebSocket with {@link Worker.serve}, or
 * over anything else through {@link Worker.openSession} (tests use an in-memory pair).
 */
import type { Capability } from "../wire/envelope.js";
import { DEFAULT_LIMITS, validateLimits, type Limits } from "../wire/limits.js";
import { HostTensor } from "../wire/tensors.js";
import { loadNpz, makeDataset, type Dataset, type DatasetSource } from "./datasets.js";
import { makeRequestHandler } from "./handlers.js";
import { MethodRegistry, type MethodFunction, type MethodOptions } from "./methods.js";
import { serveWebSocket, type ServeOptions, type WorkerServer } from "./server.js";
import { ServerSession, TokenTable, type RequestFailure, type SessionOutput } from "./session.js";
import { ObjectStores } from "./store.js";

/** The program name sent as `Welcome.server_name`. */
export const SERVER_NAME = "fedproto-node/0.1";

/** The capabilities a worker without training offers (§4.3.1). */
export const WORKER_CAPABILITIES: readonly Capability[] = [
  "objects",
  "chunked",
  "datasets",
  "calls",
  "notifications",
  "deadlines",
];

/** How to build a {@link Worker}. */
export interface WorkerOptions {
  /** `Welcome.server_id`; stable across restarts (§4.6.1). */
  id: string;
  /** `Welcome.server_name`; default {@link SERVER_NAME}. */
  name?: string;
  /**
   * Tokens by identity: `{alice: "tok-a", bob: ["tok-b1", "tok-b2"]}`. With at least one token, every
   * client must present one (§15); without, every client is `anonymous`.
   */
  tokens?: Readonly<Record<string, string | readonly string[]>>;
  /** Limits to advertise and enforce; missing fields take {@link DEFAULT_LIMITS}. */
  limits?: Partial<Limits>;
  /** Also advertise `conformance` (§18); the caller adds the profile's dataset and methods. */
  conformance?: boolean;
  /** Push notifications (§6.4); default true. Without, `notifications` is not advertised and none is sent. */
  notifications?: boolean;
  /**
   * Send clients the text of unexpected failures (an exposed method throwing something that is not a
   * protocol error, or a bug), for development. Default false: a generic INTERNAL with a short error id
   * (§13.1.7, §11.4.3); the text stays in the log.
   */
  exposeErrors?: boolean;
  /**
   * Where unexpected failures are logged, each with the error id its client got. Default: one line on
   * stderr (`request failed error_id=... identity=... kind=...`) followed by the stack.
   */
  onFailure?: (failure: RequestFailure) => void;
}

/** The default {@link WorkerOptions.onFailure}: the error id, identity and request kind, then the stack. */
export function logFailureToStderr(failure: RequestFailure): void {
  const { error } = failure;
  const detail = error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error);
  process.stderr.write(
    `fedproto-node: request failed error_id=${failure.errorId} identity=${failure.identity} kind=${failure.kind}\n${detail}\n`,
  );
}

/** A fedproto server without training: objects, chunked transfers, datasets, custom calls, notifications. */
export class Worker {
  readonly id: string;
  readonly name: string;
  readonly limits: Readonly<Limits>;
  readonly capabilities: readonly Capability[];
  /** Whether clients get the text of unexpected failures (see {@link WorkerOptions.exposeErrors}). */
  readonly exposeErrors: boolean;
  private readonly onFailure: (failure: RequestFailure) => void;
  private readonly tokens: TokenTable;
  private readonly datasets = new Map<string, Dataset>();
  private readonly methods = new MethodRegistry();
  private readonly stores: ObjectStores;

  constructor(options: WorkerOptions) {
    if (options.id === "") throw new TypeError("a worker needs a non-empty id");
    this.id = options.id;
    this.name = options.name ?? SERVER_NAME;
    const limits = { ...DEFAULT_LIMITS, ...(options.limits ?? {}) };
    validateLimits(limits);
    this.limits = Object.freeze(limits);
    const offered = WORKER_CAPABILITIES.filter((c) => c !== "notifications" || options.notifications !== false);
    this.capabilities = Object.freeze([...offered, ...(options.conformance === true ? (["conformance"] as const) : [])]);
    const byToken = new Map<string, string>();
    for (const [identity, tokens] of Object.entries(options.tokens ?? {})) {
      if (identity === "") throw new TypeError("an identity name must not be empty");
      for (const token of typeof tokens === "string" ? [tokens] : tokens) {
        if (token === "") throw new TypeError(`identity ${identity}: a token must not be empty`);
        if (byToken.has(token) && byToken.get(token) !== identity) {
          throw new TypeError("one token is given to two identities (§15.2.1)");
        }
        byToken.set(token, identity);
      }
    }
    this.tokens = new TokenTable(byToken);
    this.exposeErrors = options.exposeErrors === true;
    this.onFailure = options.onFailure ?? logFailureToStderr;
    this.stores = new ObjectStores(this.limits.maxObjectBytes);
  }

  /**
   * Offers a dataset under `key`: features and targets with the sample dimension first, a {@link Dataset},
   * or the path of an `.npz` file (arrays `features`/`targets`, `data`/`target` or `x`/`y`).
   */
  addDataset(key: string, source: DatasetSource | string): this {
    if (this.datasets.has(key)) throw new TypeError(`dataset ${JSON.stringify(key)} is already offered`);
    const resolved = typeof source === "string" ? loadNpz(source) : source;
    if (!(resolved.data instanceof HostTensor) || !(resolved.target instanceof HostTensor)) {
      throw new TypeError(`dataset ${key}: data and target must be HostTensors`);
    }
    this.datasets.set(key, makeDataset(key, resolved));
    return this;
  }

  /** Exposes `fn` to clients as `name` (§11); see {@link MethodRegistry.register}. */
  method(name: string, fn: MethodFunction, options: MethodOptions = {}): this {
    this.methods.register(name, fn, options);
    return this;
  }

  /** A new session speaking through `output` (one per connection). */
  openSession(output: SessionOutput, writable?: () => Promise<void>): ServerSession {
    const handler = makeRequestHandler({
      capabilities: this.capabilities,
      stores: this.stores,
      datasets: this.datasets,
      methods: this.methods,
    });
    return new ServerSession(
      {
        serverId: this.id,
        serverName: this.name,
        capabilities: this.capabilities,
        limits: this.limits,
        tokens: this.tokens,
        exposeErrors: this.exposeErrors,
        onFailure: this.onFailure,
      },
      handler,
      output,
      writable,
    );
  }

  /** Listens for WebSocket connections; resolves once listening. */
  serve(options: ServeOptions = {}): Promise<WorkerServer> {
    return serveWebSocket(this, options);
  }
}
