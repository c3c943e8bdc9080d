/**
 * The conformance profile (docs/protocol.md §18) on a {@link Worker}: the fixture dataset `conformance`,
 * the test hooks `echo`, `fail`, `sleep`, `notify` and `whoami`, and the profile's limits.
 */
import { CancelledError, InvalidArgumentError, errorFromCode } from "../wire/errors.js";
import { CONFORMANCE_LIMITS, type Limits } from "../wire/limits.js";
import type { JsMap } from "../wire/values.js";
import { conformanceDataset } from "./datasets.js";
import { Worker, type WorkerOptions } from "./worker.js";

/** Options of {@link conformanceWorker}. */
export interface ConformanceOptions {
  id?: string;
  tokens?: Readonly<Record<string, string | readonly string[]>>;
  limits?: Partial<Limits>;
  /** Default true; without, `notify` answers UNIMPLEMENTED (§18.2.9). */
  notifications?: boolean;
  /** See {@link WorkerOptions.exposeErrors}. */
  exposeErrors?: boolean;
  /** See {@link WorkerOptions.onFailure}. */
  onFailure?: WorkerOptions["onFailure"];
}

/** The longest `sleep` the hook accepts (§18.2.6). */
export const MAX_SLEEP_SECONDS = 60;

/** Waits `ms` milliseconds, or rejects with the signal's reason as soon as it aborts (§18.2.7). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason ?? new CancelledError("cancelled"));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason ?? new CancelledError("cancelled"));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A worker running the conformance profile. */
export function conformanceWorker(options: ConformanceOptions = {}): Worker {
  const worker = new Worker({
    id: options.id ?? "conformance",
    limits: { ...CONFORMANCE_LIMITS, ...(options.limits ?? {}) },
    conformance: true,
    notifications: options.notifications !== false,
    exposeErrors: options.exposeErrors === true,
    ...(options.tokens === undefined ? {} : { tokens: options.tokens }),
    ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }),
  });
  worker.addDataset("conformance", conformanceDataset());
  worker.method("echo", ({ args, kwargs }) => new Map([["args", args!], ["kwargs", kwargs!]]) as JsMap, {
    description: "Returns its positional and keyword arguments unchanged (§18.2.2).",
    params: [
      { name: "args", type: "any", kind: "var_positional" },
      { name: "kwargs", type: "any", kind: "var_keyword" },
    ],
    returns: "map",
  });
  worker.method(
    "fail",
    ({ code, message }) => {
      const n = code as bigint;
      if (n < 1n || n > 16n) {
        throw new InvalidArgumentError(`fail: code ${n} is outside 1..16 (§18.2.4)`);
      }
      throw errorFromCode(Number(n), message as string);
    },
    {
      description: "Ends the call with an Error of the given code and message (§18.2.3).",
      params: [
        { name: "code", type: "int" },
        { name: "message", type: "string", default: "" },
      ],
      returns: "null",
    },
  );
  worker.method(
    "sleep",
    async ({ seconds }, ctx) => {
      const s = seconds as number;
      if (!(s >= 0 && s <= MAX_SLEEP_SECONDS)) {
        throw new InvalidArgumentError(`sleep: seconds must be within 0..${MAX_SLEEP_SECONDS}, not ${s} (§18.2.6)`);
      }
      await sleep(s * 1000, ctx.signal);
      return s;
    },
    {
      description: "Waits the given seconds, cancellably, and returns them (§18.2.5).",
      params: [{ name: "seconds", type: "double" }],
      returns: "double",
    },
  );
  worker.method(
    "notify",
    ({ topic, payload }, ctx) => {
      ctx.notify(topic as string, payload!);
      return null;
    },
    {
      description: "Pushes Notification{topic, payload} to the calling connection, then returns (§18.2.8).",
      params: [
        { name: "topic", type: "string" },
        { name: "payload", type: "any" },
      ],
      returns: "null",
    },
  );
  worker.method("whoami", (_args, ctx) => ctx.identity, {
    description: "Returns the caller's identity (§18.2.10).",
    returns: "string",
  });
  return worker;
}
