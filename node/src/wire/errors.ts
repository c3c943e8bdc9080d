/**
 * Protocol errors (docs/protocol.md §13) as typed exceptions: one class per `ErrorCode`, all derived
 * from {@link FedprotoError}, which carries the wire code, and conversions to and from the `Error`
 * message.
 */
import { create } from "@bufbuild/protobuf";
import { ErrorCode, ErrorSchema, type Error as ProtoError } from "./proto.js";

/** String-to-string details of an error (§13.1.3: informative, except the keys the spec names). */
export type ErrorDetails = Record<string, string>;

/** Options shared by every error constructor. */
export interface FedprotoErrorOptions {
  /** Machine-readable context, sent as `Error.details`. */
  details?: ErrorDetails;
  /** The underlying failure, for local debugging only (never sent). */
  cause?: unknown;
}

/** The base of every protocol error; `code` is the wire `ErrorCode`. */
export class FedprotoError extends Error {
  /** The wire code this error travels as. */
  readonly code: ErrorCode;
  /** The `Error.details` map. */
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: FedprotoErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    // §13.1.5: UNSPECIFIED is never sent; §13.1.4: it reads as INTERNAL.
    this.code = code === ErrorCode.UNSPECIFIED ? ErrorCode.INTERNAL : code;
    this.details = { ...(options.details ?? {}) };
    this.name = new.target.name;
  }

  /** The short name of the code, as the spec writes it (`NOT_FOUND`). */
  get codeName(): string {
    return errorCodeName(this.code);
  }
}

/** A frame did not decode, or an envelope had no body (§3.3, §3.5). */
export class MalformedError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.MALFORMED, message, options);
  }
}
/** No protocol version in common (§4.2). */
export class UnsupportedVersionError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.UNSUPPORTED_VERSION, message, options);
  }
}
/** Missing or unknown token (§15). */
export class UnauthenticatedError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.UNAUTHENTICATED, message, options);
  }
}
/** The identity may not do this (§12.2). */
export class PermissionDeniedError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.PERMISSION_DENIED, message, options);
  }
}
/** A named object, dataset or model does not exist for this identity. */
export class NotFoundError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.NOT_FOUND, message, options);
  }
}
/** A call named a method that is not exposed (§11.1). */
export class MethodNotFoundError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.METHOD_NOT_FOUND, message, options);
  }
}
/** A field or argument is missing, of the wrong type or out of range. */
export class InvalidArgumentError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.INVALID_ARGUMENT, message, options);
  }
}
/** An object with that id exists and `overwrite` is false (§9.2). */
export class AlreadyExistsError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.ALREADY_EXISTS, message, options);
  }
}
/** The session or identity is not in a state to run the request. */
export class FailedPreconditionError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.FAILED_PRECONDITION, message, options);
  }
}
/** A limit was hit (§14). */
export class ResourceExhaustedError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.RESOURCE_EXHAUSTED, message, options);
  }
}
/** The request was cancelled (§6.2, §6.3). */
export class CancelledError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.CANCELLED, message, options);
  }
}
/** The request's deadline passed (§5.6). */
export class DeadlineExceededError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.DEADLINE_EXCEEDED, message, options);
  }
}
/** The server failed in a way that is not the client's fault (§11.4). */
export class InternalError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.INTERNAL, message, options);
  }
}
/** The server is shutting down (§6.3). */
export class UnavailableError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.UNAVAILABLE, message, options);
  }
}
/** The body kind is unknown, unimplemented or not advertised (§3.6). */
export class UnimplementedError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.UNIMPLEMENTED, message, options);
  }
}
/** A chunked payload did not match its SHA-256 (§7.3). */
export class DataLossError extends FedprotoError {
  constructor(message: string, options?: FedprotoErrorOptions) {
    super(ErrorCode.DATA_LOSS, message, options);
  }
}

type ErrorClass = new (message: string, options?: FedprotoErrorOptions) => FedprotoError;

/** The class of each wire code (UNSPECIFIED maps to INTERNAL, §13.1.4). */
export const ERROR_CLASSES: ReadonlyMap<ErrorCode, ErrorClass> = new Map<ErrorCode, ErrorClass>([
  [ErrorCode.MALFORMED, MalformedError],
  [ErrorCode.UNSUPPORTED_VERSION, UnsupportedVersionError],
  [ErrorCode.UNAUTHENTICATED, UnauthenticatedError],
  [ErrorCode.PERMISSION_DENIED, PermissionDeniedError],
  [ErrorCode.NOT_FOUND, NotFoundError],
  [ErrorCode.METHOD_NOT_FOUND, MethodNotFoundError],
  [ErrorCode.INVALID_ARGUMENT, InvalidArgumentError],
  [ErrorCode.ALREADY_EXISTS, AlreadyExistsError],
  [ErrorCode.FAILED_PRECONDITION, FailedPreconditionError],
  [ErrorCode.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [ErrorCode.CANCELLED, CancelledError],
  [ErrorCode.DEADLINE_EXCEEDED, DeadlineExceededError],
  [ErrorCode.INTERNAL, InternalError],
  [ErrorCode.UNAVAILABLE, UnavailableError],
  [ErrorCode.UNIMPLEMENTED, UnimplementedError],
  [ErrorCode.DATA_LOSS, DataLossError],
]);

/** The spec's short name of a code (`NOT_FOUND`), or `CODE_<n>` for a value this schema does not know. */
export function errorCodeName(code: ErrorCode | number): string {
  const name = (ErrorCode as unknown as Record<number, string | undefined>)[code];
  return name ?? `CODE_${code}`;
}

/**
 * The typed error for a wire code. Unknown codes and UNSPECIFIED become {@link InternalError}
 * (§13.1.4), keeping the original number in `details.code` when it was not 0.
 */
export function errorFromCode(code: ErrorCode | number, message: string, details: ErrorDetails = {}): FedprotoError {
  const cls = ERROR_CLASSES.get(code);
  if (cls !== undefined) {
    return new cls(message, { details });
  }
  const extra: ErrorDetails = code === ErrorCode.UNSPECIFIED ? {} : { code: String(code) };
  return new InternalError(message, { details: { ...details, ...extra } });
}

/** A received `Error` message as a typed error. */
export function errorFromProto(error: ProtoError): FedprotoError {
  return errorFromCode(error.code, error.message, { ...error.details });
}

/** A typed error as an `Error` message. */
export function errorToProto(error: FedprotoError): ProtoError {
  return create(ErrorSchema, { code: error.code, message: error.message, details: { ...error.details } });
}

/**
 * Any thrown value as a protocol error: a {@link FedprotoError} stays what it is; anything else
 * becomes INTERNAL with its own message and nothing more (§11.4.3: no stack, no paths).
 */
export function asFedprotoError(thrown: unknown): FedprotoError {
  if (thrown instanceof FedprotoError) {
    return thrown;
  }
  const message = thrown instanceof Error ? thrown.message : String(thrown);
  return new InternalError(message, { cause: thrown });
}
