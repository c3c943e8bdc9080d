/**
 * The fedproto client for Node.js: {@link Client} (connection, requests as promises, events), the
 * I/O-free {@link ClientSession} under it, the client-only {@link ConnectionClosedError}, and the
 * descriptions it returns.
 */
export * from "./client.js";
export * from "./errors.js";
export * from "./session.js";
export * from "./types.js";
