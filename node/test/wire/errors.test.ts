import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ERROR_CLASSES,
  FedprotoError,
  InternalError,
  NotFoundError,
  asFedprotoError,
  errorCodeName,
  errorFromCode,
  errorFromProto,
  errorToProto,
} from "../../src/wire/errors.js";
import { ErrorCode } from "../../src/wire/proto.js";

test("every code 1..16 has its own class carrying that code", () => {
  for (let code = 1; code <= 16; code++) {
    const err = errorFromCode(code, "m", { k: "v" });
    assert.ok(err instanceof FedprotoError);
    assert.equal(err.code, code);
    assert.equal(err.constructor, ERROR_CLASSES.get(code));
    assert.deepEqual(err.details, { k: "v" });
  }
  assert.equal(ERROR_CLASSES.size, 16);
});

test("unknown codes and UNSPECIFIED read as INTERNAL (§13.1.4)", () => {
  const unknown = errorFromCode(99, "x");
  assert.ok(unknown instanceof InternalError);
  assert.equal(unknown.details.code, "99");
  const unspecified = errorFromCode(ErrorCode.UNSPECIFIED, "y");
  assert.ok(unspecified instanceof InternalError);
  assert.deepEqual(unspecified.details, {});
});

test("proto round trip keeps code, message and details", () => {
  const err = new NotFoundError("no object 'a'", { details: { id: "a" } });
  const back = errorFromProto(errorToProto(err));
  assert.ok(back instanceof NotFoundError);
  assert.equal(back.message, "no object 'a'");
  assert.deepEqual(back.details, { id: "a" });
  assert.equal(back.codeName, "NOT_FOUND");
});

test("asFedprotoError keeps typed errors and turns anything else into INTERNAL with its message only", () => {
  const typed = new NotFoundError("n");
  assert.equal(asFedprotoError(typed), typed);
  const other = asFedprotoError(new TypeError("boom"));
  assert.ok(other instanceof InternalError);
  assert.equal(other.message, "boom");
  assert.equal(asFedprotoError("text").message, "text");
  assert.equal(errorCodeName(ErrorCode.DATA_LOSS), "DATA_LOSS");
  assert.equal(errorCodeName(77), "CODE_77");
});
