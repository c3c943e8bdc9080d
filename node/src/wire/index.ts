/**
 * The wire layer of fedproto for Node.js: envelopes, values, tensors and chunking, errors and limits.
 * Both the worker (`../worker/`) and the client (`../client/`) build on it; it does no I/O.
 */
export * from "./digests.js";
export * from "./envelope.js";
export * from "./errors.js";
export * from "./limits.js";
export * from "./strict.js";
export * from "./tensors.js";
export * from "./values.js";
export * as proto from "./proto.js";
