import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { zipSync } from "fflate";
import { DType } from "../../src/wire/proto.js";
import { conformanceDataset, datasetInfo, loadNpz, makeDataset } from "../../src/worker/datasets.js";
import { NpyFormatError, parseNpy } from "../../src/worker/npy.js";

/** A .npy file as numpy writes it (format 1.0). */
function npy(descr: string, shape: number[], data: Uint8Array): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const total = 10 + header.length + 1;
  header += " ".repeat((64 - (total % 64)) % 64) + "\n";
  const out = new Uint8Array(10 + header.length + data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(data, 10 + header.length);
  return out;
}

test("the conformance fixture has the values of §18.1", () => {
  const ds = makeDataset("conformance", conformanceDataset());
  const info = datasetInfo(ds);
  assert.equal(info.sampleCount, 64n);
  assert.deepEqual(info.featureShape, [4n]);
  assert.deepEqual(info.targetShape, []);
  assert.equal(info.featureDtype, DType.DTYPE_FLOAT32);
  assert.equal(info.targetDtype, DType.DTYPE_INT64);
  assert.equal(info.description, "conformance fixture");
  const x = new Float32Array(ds.features.data.slice().buffer);
  assert.deepEqual([...x.slice(0, 12)], [-0.5, -0.4, -0.3, -0.2, -0.1, 0, 0.1, 0.2, 0.3, 0.4, 0.5, -0.5].map(Math.fround));
  const y = new BigInt64Array(ds.targets.data.slice().buffer);
  assert.deepEqual([...y.slice(0, 3)], [0n, 1n, 2n]);
});

test("npy arrays parse with dtype and shape; bad files are named errors", () => {
  const t = parseNpy(npy("<f4", [2, 3], new Uint8Array(24)));
  assert.equal(t.dtype, DType.DTYPE_FLOAT32);
  assert.deepEqual(t.shape, [2, 3]);
  assert.deepEqual(parseNpy(npy("|b1", [2], Uint8Array.from([0, 1]))).shape, [2]);
  assert.throws(() => parseNpy(Uint8Array.from([1, 2, 3])), NpyFormatError);
  assert.throws(() => parseNpy(npy(">f4", [1], new Uint8Array(4))), /unsupported dtype/);
  assert.throws(() => parseNpy(npy("<f4", [2], new Uint8Array(4))), NpyFormatError);
});

test("npz datasets load from any accepted key pair, stored or deflated", () => {
  const dir = mkdtempSync(join(tmpdir(), "fedproto-npz-"));
  try {
    const x = npy("<f8", [3, 2], new Uint8Array(48));
    const y = npy("<i8", [3], new Uint8Array(24));
    writeFileSync(join(dir, "a.npz"), zipSync({ "x.npy": x, "y.npy": y }, { level: 0 }));
    writeFileSync(join(dir, "b.npz"), zipSync({ "features.npy": x, "targets.npy": y }, { level: 6 }));
    writeFileSync(join(dir, "c.npz"), zipSync({ "foo.npy": x }));
    for (const name of ["a.npz", "b.npz"]) {
      const info = datasetInfo(makeDataset("k", loadNpz(join(dir, name))));
      assert.equal(info.sampleCount, 3n);
      assert.deepEqual(info.featureShape, [2n]);
    }
    assert.throws(() => loadNpz(join(dir, "c.npz")), /no features\/targets pair/);
    assert.throws(() => loadNpz(join(dir, "missing.npz")), NpyFormatError);
    const bad = { data: parseNpy(x), target: parseNpy(npy("<i8", [2], new Uint8Array(16))) };
    assert.throws(() => makeDataset("k", bad), /3 feature rows but 2 targets/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
