/** `@fedproto/node`: the wire layer, the worker (server) and the client of the fedproto protocol. */
export * from "./wire/index.js";
export * from "./worker/index.js";
export * from "./client/index.js";
