/**
 * The command line of `fedproto-node` (entry point `cli.ts`): `serve` runs a worker over WebSocket.
 *
 *     fedproto-node serve --port 9001 [--host 127.0.0.1] [--id ID] [--conformance] [--no-notifications]
 *                         [--token-file FILE] [--dataset KEY=FILE.npz ...] [--expose-errors]
 *                         [--max-connections N]
 *
 * Prints `listening on ws://HOST:PORT` once ready, stops cleanly on SIGTERM or SIGINT, and reports bad
 * arguments in one line on stderr with exit status 2.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { conformanceWorker } from "./worker/conformance.js";
import { DEFAULT_MAX_CONNECTIONS } from "./worker/server.js";
import { Worker } from "./worker/worker.js";

const USAGE =
  "usage: fedproto-node serve [--host HOST] [--port PORT] [--id ID] [--conformance] " +
  "[--no-notifications] [--token-file FILE] [--dataset KEY=FILE.npz ...] [--expose-errors] " +
  "[--max-connections N]\n" +
  "  --expose-errors  send clients the text of unexpected failures (default: a generic INTERNAL with an\n" +
  "                   error id, which the log on stderr shows beside the failure; §13.1.7)\n" +
  "  --max-connections N  serve at most N connections at once, one more is refused with HTTP 503\n" +
  "                   (default 1000; 0: no bound; §14.2.11)";

/** A command-line mistake: printed as one line, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Reads a token file: one `IDENTITY TOKEN` pair per line; blank lines and `#` comments are skipped. */
export function readTokenFile(path: string): Record<string, string[]> {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new UsageError(`cannot read token file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const tokens: Record<string, string[]> = {};
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const parts = line.split(/\s+/);
    if (parts.length !== 2) {
      throw new UsageError(`${path}:${i + 1}: expected 'IDENTITY TOKEN'`);
    }
    const [identity, token] = parts as [string, string];
    (tokens[identity] ??= []).push(token);
  });
  if (Object.keys(tokens).length === 0) throw new UsageError(`token file ${path} holds no token`);
  return tokens;
}

/** The options of `serve`, parsed and checked. */
export interface ServeArguments {
  host: string;
  port: number;
  id: string;
  conformance: boolean;
  notifications: boolean;
  tokenFile: string | undefined;
  datasets: [string, string][];
  exposeErrors: boolean;
  maxConnections: number;
}

/** Parses `serve`'s arguments (without the command word). */
export function parseServeArguments(argv: string[]): ServeArguments {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string", default: "8777" },
        id: { type: "string", default: "worker" },
        conformance: { type: "boolean", default: false },
        "no-notifications": { type: "boolean", default: false },
        "token-file": { type: "string" },
        dataset: { type: "string", multiple: true, default: [] },
        "expose-errors": { type: "boolean", default: false },
        "max-connections": { type: "string", default: String(DEFAULT_MAX_CONNECTIONS) },
      },
      allowPositionals: false,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message.split("\n")[0]!);
  }
  const v = parsed.values;
  const port = Number(v.port);
  if (!/^\d+$/.test(v.port!) || !Number.isInteger(port) || port > 65535) {
    throw new UsageError(`--port must be an integer from 0 to 65535, not ${JSON.stringify(v.port)}`);
  }
  if (v.id === "") throw new UsageError("--id must not be empty");
  const maxConnections = Number(v["max-connections"]);
  if (!/^\d+$/.test(v["max-connections"]!) || !Number.isSafeInteger(maxConnections)) {
    throw new UsageError(
      `--max-connections must be an integer >= 0 (0: no bound), not ${JSON.stringify(v["max-connections"])}`,
    );
  }
  const datasets = (v.dataset ?? []).map((spec): [string, string] => {
    const at = spec.indexOf("=");
    if (at <= 0 || at === spec.length - 1) throw new UsageError(`--dataset expects KEY=FILE, not ${JSON.stringify(spec)}`);
    return [spec.slice(0, at), spec.slice(at + 1)];
  });
  return {
    host: v.host!,
    port,
    id: v.id!,
    conformance: v.conformance === true,
    notifications: v["no-notifications"] !== true,
    tokenFile: v["token-file"],
    datasets,
    exposeErrors: v["expose-errors"] === true,
    maxConnections,
  };
}

/** Builds the worker `serve` runs. */
export function buildWorker(args: ServeArguments): Worker {
  const tokens = args.tokenFile === undefined ? undefined : readTokenFile(args.tokenFile);
  const options = {
    id: args.id,
    notifications: args.notifications,
    exposeErrors: args.exposeErrors,
    ...(tokens === undefined ? {} : { tokens }),
  };
  const worker = args.conformance ? conformanceWorker(options) : new Worker(options);
  for (const [key, file] of args.datasets) {
    try {
      worker.addDataset(key, file);
    } catch (err) {
      throw new UsageError(`--dataset ${key}: ${(err as Error).message}`);
    }
  }
  return worker;
}

async function serve(argv: string[]): Promise<void> {
  const args = parseServeArguments(argv);
  const worker = buildWorker(args);
  let server;
  try {
    server = await worker.serve({ host: args.host, port: args.port, maxConnections: args.maxConnections });
  } catch (err) {
    throw new UsageError(`cannot listen on ${args.host}:${args.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    server.close(2000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Printed last: whoever waits for this line may signal at once, and the handlers must be in place.
  process.stdout.write(`listening on ${server.url}\n`);
}

/** Runs the command line; returns the exit status for errors (a running server keeps the process alive). */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "serve") {
      await serve(rest);
      return 0;
    }
    if (command === "--help" || command === "-h" || command === "help") {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    throw new UsageError(command === undefined ? "missing command (serve)" : `unknown command ${JSON.stringify(command)}`);
  } catch (err) {
    const message = err instanceof UsageError ? err.message : `error: ${(err as Error).message}`;
    process.stderr.write(`fedproto-node: ${message}\n`);
    return err instanceof UsageError ? 2 : 1;
  }
}
