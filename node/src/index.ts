/** `@fedproto/node`: the wire layer and the worker (server). */
export * from "./wire/index.js";
