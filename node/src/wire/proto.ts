/**
 * The generated protobuf schema (package `fedproto.v1`), re-exported from one place.
 *
 * Everything under `src/gen/` is written by `make proto` and never edited by hand; the rest of the
 * package imports the generated types and schemas through this module only.
 */
export * from "../gen/fedproto_pb/v1/calls_pb.js";
export * from "../gen/fedproto_pb/v1/datasets_pb.js";
export * from "../gen/fedproto_pb/v1/envelope_pb.js";
export * from "../gen/fedproto_pb/v1/errors_pb.js";
export * from "../gen/fedproto_pb/v1/objects_pb.js";
export * from "../gen/fedproto_pb/v1/session_pb.js";
export * from "../gen/fedproto_pb/v1/tensor_pb.js";
export * from "../gen/fedproto_pb/v1/training_pb.js";
export * from "../gen/fedproto_pb/v1/value_pb.js";
