/** `@fedproto/node`: the wire layer and the worker (server) of the fedproto protocol. */
export * from "./wire/index.js";
export * from "./worker/index.js";
