/**
 * The thin WebSocket shell around {@link ServerSession}s (using `ws`): it moves binary messages in and
 * frames out, turns text messages and closes into session events, and enforces the frame limit where
 * WebSocket implementations do, before a message is handed on (§3.4, §3.1.3). No protocol rule lives here.
 */
import { WebSocketServer, type WebSocket, type RawData } from "ws";
import type { AddressInfo } from "node:net";
import type { ServerSession } from "./session.js";
import type { Worker } from "./worker.js";

/** The subprotocol a server selects when offered (§2.2.2). */
export const SUBPROTOCOL = "fedproto.v1";

/** Where to listen. */
export interface ServeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port). */
  port?: number;
  /**
   * The most connections served at once (§14.2.11); the opening handshake of one more is refused with
   * HTTP 503. Default {@link DEFAULT_MAX_CONNECTIONS}; 0: no bound.
   */
  maxConnections?: number;
}

/** The connection bound a worker serves with unless told otherwise (§14.2.11, as the reference worker). */
export const DEFAULT_MAX_CONNECTIONS = 1000;

/** A listening worker. */
export interface WorkerServer {
  readonly host: string;
  readonly port: number;
  /** `ws://host:port`. */
  readonly url: string;
  /**
   * Shuts down (§6.3.3 to §6.3.6): goodbye to every connection, requests in flight get `graceMs` to
   * finish, then UNAVAILABLE, and every connection closes with 1001.
   */
  close(graceMs?: number): Promise<void>;
}

// How long a shutdown waits for a peer to answer the close handshake before cutting the connection.
const CLOSE_WAIT_MS = 1000;

// Above this many bytes waiting in a socket, a download waits for the socket before its next chunk.
const HIGH_WATER_BYTES = 4 * 1024 * 1024;

function asBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

/** Serves `worker` over WebSocket; resolves once the port is bound. */
export function serveWebSocket(worker: Worker, options: ServeOptions = {}): Promise<WorkerServer> {
  const host = options.host ?? "127.0.0.1";
  const sessions = new Map<WebSocket, ServerSession>();
  const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  if (!Number.isInteger(maxConnections) || maxConnections < 0) {
    throw new RangeError(`maxConnections must be an integer >= 0, not ${maxConnections}`);
  }
  const wss = new WebSocketServer({
    host,
    port: options.port ?? 0,
    // §3.4.1: larger messages close with 1009 before they are read (ws checks "> maxPayload": a message of
    // exactly the limit is accepted, §3.4.2).
    maxPayload: worker.limits.maxFrameBytes,
    perMessageDeflate: false, // §2.3.1
    // Text frames must reach the session whatever their bytes, to close with 1003 rather than 1007 (§3.2.1).
    skipUTF8Validation: true,
    handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false), // §2.2.2, §2.2.3
    // §14.2.11: one connection more than the bound is refused before any envelope, at the HTTP level.
    verifyClient: (_info, accept) => {
      if (maxConnections > 0 && sessions.size >= maxConnections) accept(false, 503, "Service Unavailable");
      else accept(true);
    },
  });
  wss.on("connection", (ws: WebSocket) => {
    ws.binaryType = "nodebuffer";
    let flushed: Promise<void> = Promise.resolve();
    const session = worker.openSession(
      {
        send(frame: Uint8Array): void {
          if (ws.readyState !== ws.OPEN) return;
          flushed = new Promise((resolve) => ws.send(frame, { binary: true }, () => resolve()));
        },
        close(code: number, reason: string): void {
          if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason);
        },
      },
      // Yield to the event loop between chunks (so pings and cancels are read), and wait for the socket
      // when it is backed up.
      () => (ws.bufferedAmount > HIGH_WATER_BYTES ? flushed : new Promise((resolve) => setImmediate(resolve))),
    );
    sessions.set(ws, session);
    ws.on("message", (data: RawData, isBinary: boolean) => {
      if (isBinary) session.receiveBinary(asBytes(data));
      else session.receiveText();
    });
    ws.on("ping", () => session.activity());
    ws.on("close", () => {
      sessions.delete(ws);
      session.connectionClosed();
    });
    // Errors (a message over the limit, a broken socket) are followed by a close; nothing else to do.
    ws.on("error", () => undefined);
  });
  return new Promise((resolve, reject) => {
    wss.once("error", reject);
    wss.once("listening", () => {
      wss.off("error", reject);
      wss.on("error", () => undefined);
      const address = wss.address() as AddressInfo;
      const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
      resolve({
        host: address.address,
        port: address.port,
        url: `ws://${shownHost}:${address.port}`,
        async close(graceMs = 2000): Promise<void> {
          const closed = new Promise<void>((done) => wss.close(() => done()));
          await Promise.all([...sessions.values()].map((session) => session.shutdown(graceMs)));
          // Connections whose peer does not answer the close handshake are cut after a short wait.
          await Promise.all(
            [...sessions.keys()].map(
              (ws) =>
                new Promise<void>((done) => {
                  if (ws.readyState === ws.CLOSED) {
                    done();
                    return;
                  }
                  const timer = setTimeout(() => {
                    ws.terminate();
                    done();
                  }, CLOSE_WAIT_MS);
                  ws.once("close", () => {
                    clearTimeout(timer);
                    done();
                  });
                }),
            ),
          );
          await closed;
        },
      });
    });
  });
}
