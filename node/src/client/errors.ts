/**
 * Errors that only a client raises. Every error the client reports is a {@link FedprotoError} with a
 * wire code (one class per `ErrorCode`, from the wire layer); the one addition here is the loss of the
 * connection itself, which belongs to no request but ends every request in flight (§5.3.6).
 */
import { UnavailableError, type FedprotoErrorOptions } from "../wire/index.js";

/**
 * The connection closed (or could not be opened) before the request's terminal reply arrived. Its code
 * is UNAVAILABLE (docs/protocol.md §5.3.8): the server is not reachable on this connection; the request
 * may or may not have taken effect.
 */
export class ConnectionClosedError extends UnavailableError {
  /** The WebSocket close code, when the connection was closed by a close frame (1006 when it dropped). */
  readonly closeCode: number | undefined;

  constructor(message: string, closeCode?: number, options?: FedprotoErrorOptions) {
    super(message, options);
    this.closeCode = closeCode;
  }
}
