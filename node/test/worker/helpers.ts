/** An in-memory peer for session tests: encodes what the test sends, decodes what the session sends. */
import { create } from "@bufbuild/protobuf";
import { decodeEnvelope, encodeEnvelope, makeEnvelope, type Body } from "../../src/wire/envelope.js";
import { HelloSchema, type Envelope } from "../../src/wire/proto.js";
import type { ServerSession, SessionOutput } from "../../src/worker/session.js";

export class Peer implements SessionOutput {
  readonly received: Envelope[] = [];
  readonly frames: Uint8Array[] = [];
  closed: { code: number; reason: string } | undefined;
  session!: ServerSession;
  private waiters: (() => void)[] = [];

  send(frame: Uint8Array): void {
    this.frames.push(frame);
    this.received.push(decodeEnvelope(frame));
    for (const w of this.waiters.splice(0)) w();
  }

  close(code: number, reason: string): void {
    this.closed = { code, reason };
    for (const w of this.waiters.splice(0)) w();
  }

  /** The close code, if the session closed. */
  closeCode(): number | undefined {
    return this.closed?.code;
  }

  /** Sends one envelope to the session. */
  put(requestId: bigint | number, body: Body, deadlineMs = 0n): void {
    this.session.receiveBinary(encodeEnvelope(makeEnvelope(BigInt(requestId), body, deadlineMs)));
  }

  hello(init: { token?: string; maxFrameBytes?: bigint; versions?: number[]; digests?: string[] } = {}, requestId = 1n): Envelope {
    this.put(requestId, { case: "hello", value: create(HelloSchema, { versions: [1], ...init }) });
    return this.received.at(-1)!;
  }

  /** Waits (bounded) until `count` envelopes have arrived or the connection closed. */
  async waitFor(count: number, timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < count && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 20);
      });
    }
  }

  /** The envelopes with `requestId`. */
  withId(requestId: bigint | number): Envelope[] {
    return this.received.filter((e) => e.requestId === BigInt(requestId));
  }

  /** The last envelope, which must be an error; returns its code, request id and details. */
  lastError(): { code: number; requestId: bigint; message: string; details: Record<string, string> } {
    const env = this.received.at(-1);
    if (env?.body.case !== "error") throw new Error(`expected an error, got ${env?.body.case}`);
    return { code: env.body.value.code, requestId: env.requestId, message: env.body.value.message, details: { ...env.body.value.details } };
  }
}

export const tick = (ms = 0): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
