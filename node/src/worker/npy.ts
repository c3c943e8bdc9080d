/**
 * Reading NumPy `.npy` arrays and `.npz` archives into {@link HostTensor}s, for datasets a worker offers.
 *
 * `.npz` is a zip archive of `.npy` files; it is unpacked with `fflate` (a small, dependency-free zip and
 * deflate library), which reads both stored (`np.savez`) and deflated (`np.savez_compressed`) members.
 * The `.npy` header is a Python dict literal with three keys; it is parsed here because it is a
 * fixed, documented format (numpy's NEP 1) that no maintained npm package reads without pulling in a
 * whole array library.
 */
import { readFileSync } from "node:fs";
import { unzipSync } from "fflate";
import { DType } from "../wire/proto.js";
import { HostTensor } from "../wire/tensors.js";

/** A `.npy` or `.npz` file that cannot be read; the message names the file and the problem. */
export class NpyFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NpyFormatError";
  }
}

// numpy's type strings (without byte order) for each dtype the protocol has; bfloat16 has none in numpy.
const DESCR: Readonly<Record<string, DType>> = {
  f2: DType.DTYPE_FLOAT16,
  f4: DType.DTYPE_FLOAT32,
  f8: DType.DTYPE_FLOAT64,
  i1: DType.DTYPE_INT8,
  i2: DType.DTYPE_INT16,
  i4: DType.DTYPE_INT32,
  i8: DType.DTYPE_INT64,
  u1: DType.DTYPE_UINT8,
  b1: DType.DTYPE_BOOL,
  c8: DType.DTYPE_COMPLEX64,
  c16: DType.DTYPE_COMPLEX128,
};

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"

/** Parses one `.npy` file's bytes (format versions 1 to 3, little-endian or single-byte dtypes, C order). */
export function parseNpy(bytes: Uint8Array, name = "array"): HostTensor {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new NpyFormatError(`${name}: not a .npy array (bad magic)`);
  }
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLength: number;
  let headerStart: number;
  if (major === 1) {
    headerLength = view.getUint16(8, true);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new NpyFormatError(`${name}: truncated .npy header`);
    headerLength = view.getUint32(8, true);
    headerStart = 12;
  } else {
    throw new NpyFormatError(`${name}: unsupported .npy format version ${major}`);
  }
  const dataStart = headerStart + headerLength;
  if (dataStart > bytes.length) throw new NpyFormatError(`${name}: truncated .npy header`);
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(headerStart, dataStart));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyFormatError(`${name}: unreadable .npy header ${JSON.stringify(header.trim())}`);
  }
  if (fortran === "True") throw new NpyFormatError(`${name}: Fortran-ordered arrays are not supported; save a C-ordered copy`);
  const order = descr[0];
  const code = descr.slice(1);
  const dtype = DESCR[code];
  if (dtype === undefined || !["<", "|", "="].includes(order ?? "")) {
    throw new NpyFormatError(`${name}: unsupported dtype ${descr} (little-endian numbers and bools only)`);
  }
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => {
      const n = Number(s.replace(/L$/, ""));
      if (!Number.isSafeInteger(n) || n < 0) throw new NpyFormatError(`${name}: bad shape (${shapeText})`);
      return n;
    });
  try {
    return HostTensor.create(dtype, shape, bytes.slice(dataStart));
  } catch (err) {
    throw new NpyFormatError(`${name}: ${(err as Error).message}`);
  }
}

/** Every array of a `.npz` archive, by name (without the `.npy` suffix). */
export function readNpz(path: string): Map<string, HostTensor> {
  let entries: Record<string, Uint8Array>;
  try {
    entries = unzipSync(readFileSync(path));
  } catch (err) {
    throw new NpyFormatError(`${path}: not a readable .npz archive (${(err as Error).message})`);
  }
  const arrays = new Map<string, HostTensor>();
  for (const [member, bytes] of Object.entries(entries)) {
    if (!member.endsWith(".npy")) continue;
    const key = member.slice(0, -4);
    arrays.set(key, parseNpy(bytes, `${path}:${member}`));
  }
  return arrays;
}
