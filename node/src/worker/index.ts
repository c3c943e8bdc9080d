/** The fedproto worker (server) for Node.js. */
export * from "./conformance.js";
export * from "./datasets.js";
export * from "./methods.js";
export * from "./npy.js";
export * from "./server.js";
export * from "./session.js";
export * from "./store.js";
export * from "./worker.js";
