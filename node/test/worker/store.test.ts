import { test } from "node:test";
import assert from "node:assert/strict";
import { AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from "../../src/wire/errors.js";
import { DType } from "../../src/wire/proto.js";
import { HostTensor, sha256 } from "../../src/wire/tensors.js";
import { ObjectStore, ObjectStores, objectInfo } from "../../src/worker/store.js";

const t = (n: number, fill = 1): HostTensor => HostTensor.create(DType.DTYPE_UINT8, [n], new Uint8Array(n).fill(fill));
const put = (store: ObjectStore, id: string, n: number, tags: string[] = [], overwrite = false) =>
  store.put({ id, overwrite }, tags, `d-${id}`, t(n));

test("insertion order, overwrite keeps position, delete and re-send moves to the end (§9.2.5, §9.5.2)", () => {
  const store = new ObjectStore(0);
  put(store, "a", 1);
  put(store, "b", 2);
  put(store, "c", 3);
  put(store, "a", 4, [], true);
  assert.deepEqual(store.list().map((o) => o.id), ["a", "b", "c"]);
  assert.equal(store.get("a").tensor.nbytes, 4);
  assert.equal(store.delete("b"), 2);
  put(store, "b", 1);
  assert.deepEqual(store.list().map((o) => o.id), ["a", "c", "b"]);
  assert.equal(store.count, 3);
  assert.equal(store.usedBytes, 8);
  assert.equal(store.clear(), 3);
  assert.equal(store.usedBytes, 0);
  assert.equal(store.clear(), 0);
});

test("errors change nothing (§9.2.4, §9.3.2, §9.4.2, §9.9.2, §9.10.1)", () => {
  const store = new ObjectStore(10);
  put(store, "a", 6);
  assert.throws(() => put(store, "a", 1), AlreadyExistsError);
  assert.throws(() => put(store, "b", 5), ResourceExhaustedError);
  assert.doesNotThrow(() => put(store, "a", 10, [], true)); // the replaced bytes do not count (§9.2.7)
  assert.throws(() => store.get("zz"), NotFoundError);
  assert.throws(() => store.delete("zz"), NotFoundError);
  assert.throws(() => store.get(""), InvalidArgumentError);
  assert.throws(() => store.get("é".repeat(129)), InvalidArgumentError); // 258 bytes
  assert.doesNotThrow(() => store.checkSend({ id: "x".repeat(256), overwrite: false, nbytes: 0 }));
  assert.throws(() => store.checkSend({ id: "x".repeat(257), overwrite: false, nbytes: 0 }), InvalidArgumentError);
  assert.deepEqual(store.list().map((o) => [o.id, o.tensor.nbytes]), [["a", 10]]);
});

test("chosen ids are unique (§9.2.3) and search needs every tag, case-sensitively (§9.8)", () => {
  const store = new ObjectStore(0);
  put(store, "obj-1", 1, ["#x"]);
  const chosen = put(store, "", 1, ["#x", "#y"]);
  assert.notEqual(chosen.id, "obj-1");
  put(store, "", 1, ["#Y"]);
  assert.deepEqual(store.search(["#x", "#y"]).map((o) => o.id), [chosen.id]);
  assert.equal(store.search([]).length, 3);
  assert.equal(store.search(["#y"]).length, 1);
});

test("identities have separate stores (§9.1) and infos carry nbytes and sha256 (§9.2.10)", () => {
  const stores = new ObjectStores(0);
  put(stores.of("alice"), "a", 3, ["t"]);
  assert.throws(() => stores.of("bob").get("a"), NotFoundError);
  const info = objectInfo(stores.of("alice").get("a"));
  assert.equal(info.tensor?.nbytes, 3n);
  assert.deepEqual(info.tensor?.sha256, sha256(new Uint8Array(3).fill(1)));
  assert.deepEqual(info.tags, ["t"]);
  assert.equal(info.description, "d-a");
});
