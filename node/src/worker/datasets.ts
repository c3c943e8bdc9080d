/**
 * Datasets a worker offers (docs/protocol.md §10): features and targets kept on the server, described by
 * `list_datasets` and never sent (§10.2). The conformance fixture of §18.1 is built here too.
 */
import { create } from "@bufbuild/protobuf";
import { DType, DatasetInfoSchema, type DatasetInfo as ProtoDatasetInfo } from "../wire/proto.js";
import { HostTensor } from "../wire/tensors.js";
import { NpyFormatError, readNpz } from "./npy.js";

/** One dataset: `features` [N, ...feature_shape] and `targets` [N, ...target_shape]. */
export interface Dataset {
  readonly key: string;
  readonly features: HostTensor;
  readonly targets: HostTensor;
  readonly description: string;
}

/** Features and targets, as `Worker.addDataset` takes them. */
export interface DatasetSource {
  /** Features with the sample dimension first. */
  data: HostTensor;
  /** Targets with the sample dimension first. */
  target: HostTensor;
  /** Free-form text (§10.1.3). */
  description?: string;
}

/** Builds a dataset, checking that features and targets have a sample dimension of the same size. */
export function makeDataset(key: string, source: DatasetSource): Dataset {
  if (key === "") throw new TypeError("a dataset needs a non-empty key");
  const { data, target } = source;
  if (data.shape.length === 0 || target.shape.length === 0) {
    throw new TypeError(`dataset ${key}: features and targets need a sample dimension`);
  }
  if (data.shape[0] !== target.shape[0]) {
    throw new TypeError(`dataset ${key}: ${data.shape[0]} feature rows but ${target.shape[0]} targets`);
  }
  return { key, features: data, targets: target, description: source.description ?? "" };
}

/** The `DatasetInfo` of a dataset (§10.1.3). */
export function datasetInfo(dataset: Dataset): ProtoDatasetInfo {
  return create(DatasetInfoSchema, {
    key: dataset.key,
    sampleCount: BigInt(dataset.features.shape[0]!),
    featureShape: dataset.features.shape.slice(1).map(BigInt),
    targetShape: dataset.targets.shape.slice(1).map(BigInt),
    featureDtype: dataset.features.dtype,
    targetDtype: dataset.targets.dtype,
    description: dataset.description,
  });
}

/** The array-name pairs an `.npz` dataset may use, in the order they are looked for. */
export const NPZ_KEY_PAIRS: readonly (readonly [string, string])[] = [
  ["features", "targets"],
  ["data", "target"],
  ["x", "y"],
];

/** Reads a dataset from an `.npz` archive holding one of the {@link NPZ_KEY_PAIRS}. */
export function loadNpz(path: string, description = ""): DatasetSource {
  const arrays = readNpz(path);
  for (const [f, t] of NPZ_KEY_PAIRS) {
    const data = arrays.get(f);
    const target = arrays.get(t);
    if (data !== undefined && target !== undefined) return { data, target, description };
  }
  const expected = NPZ_KEY_PAIRS.map(([f, t]) => `'${f}'/'${t}'`).join(", ");
  throw new NpyFormatError(`${path}: no features/targets pair found (expected keys ${expected}); has [${[...arrays.keys()].join(", ")}]`);
}

/** The conformance fixture of §18.1: 64 samples, 4 float32 features, an int64 scalar target. */
export function conformanceDataset(): DatasetSource {
  const samples = 64;
  const features = new DataView(new ArrayBuffer(samples * 4 * 4));
  const targets = new DataView(new ArrayBuffer(samples * 8));
  for (let i = 0; i < samples; i++) {
    for (let j = 0; j < 4; j++) {
      // §18.1.3: computed in binary64, rounded to the nearest binary32 (setFloat32 rounds to nearest).
      features.setFloat32((i * 4 + j) * 4, ((i * 4 + j) % 11) / 10 - 0.5, true);
    }
    targets.setBigInt64(i * 8, BigInt((i * 7) % 3), true); // §18.1.4
  }
  return {
    data: HostTensor.create(DType.DTYPE_FLOAT32, [samples, 4], new Uint8Array(features.buffer)),
    target: HostTensor.create(DType.DTYPE_INT64, [samples], new Uint8Array(targets.buffer)),
    description: "conformance fixture",
  };
}
