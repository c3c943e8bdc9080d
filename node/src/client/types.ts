/**
 * What the client hands its caller: plain, read-only descriptions of the server, its objects, datasets
 * and methods, converted once from the wire messages (docs/protocol.md §4.6, §9, §10, §11.6), with
 * sizes and shapes as numbers.
 */
import {
  dtypeWidth,
  HostTensor,
  InvalidArgumentError,
  limitsFromProto,
  proto,
  type Limits,
} from "../wire/index.js";

/** What the server said about itself in its Welcome (§4.6). */
export interface ServerInfo {
  /** The protocol version chosen (§4.2). */
  readonly version: number;
  /** The server's id (`alice`). */
  readonly serverId: string;
  /** A free-form name of the server program. */
  readonly serverName: string;
  /** The optional features it supports on this connection (§4.3). */
  readonly capabilities: ReadonlySet<string>;
  /** The limits in force on this connection (§14). */
  readonly limits: Readonly<Limits>;
  /** The identity the token mapped to (`anonymous` without tokens, §15.2). */
  readonly identity: string;
  /** The payload digest algorithm in force on the connection (§7.5.4; `sha256` when the Welcome left it empty). */
  readonly digest: string;
}

/** A stored object's metadata (§9.2.9); never its elements. */
export interface ObjectInfo {
  readonly id: string;
  readonly tags: readonly string[];
  readonly description: string;
  readonly dtype: proto.DType;
  readonly shape: readonly number[];
  readonly nbytes: number;
  /** The SHA-256 of the elements under the `sha256` digest; may be empty in listings (§9.5.3). */
  readonly sha256: Uint8Array;
  /** The digest of the elements under any other negotiated algorithm (§7.5.8); empty under `sha256`. */
  readonly digest: Uint8Array;
}

/** A dataset the server offers (§10.1.3). */
export interface DatasetInfo {
  readonly key: string;
  readonly sampleCount: number;
  readonly featureShape: readonly number[];
  readonly targetShape: readonly number[];
  readonly featureDtype: proto.DType;
  readonly targetDtype: proto.DType;
  readonly description: string;
}

/** One parameter of an exposed method (§11.6.3). */
export interface ParameterInfo {
  readonly name: string;
  readonly type: string;
  readonly required: boolean;
  readonly kind: string;
}

/** An exposed method (§11.6.2). */
export interface MethodInfo {
  readonly name: string;
  readonly description: string;
  readonly parameters: readonly ParameterInfo[];
  readonly returns: string;
}

const num = (value: bigint): number => Number(value);

/** A Welcome as a {@link ServerInfo}. */
export function serverInfoFromWelcome(welcome: proto.Welcome): ServerInfo {
  if (welcome.limits === undefined) {
    throw new InvalidArgumentError("the Welcome carries no limits (§4.6.1)");
  }
  return Object.freeze({
    version: welcome.version,
    serverId: welcome.serverId,
    serverName: welcome.serverName,
    capabilities: new Set(welcome.capabilities),
    limits: Object.freeze(limitsFromProto(welcome.limits)),
    identity: welcome.identity,
    digest: welcome.digest === "" ? "sha256" : welcome.digest,
  });
}

/** An `ObjectInfo` message as an {@link ObjectInfo}. */
export function objectInfoFromProto(info: proto.ObjectInfo | undefined): ObjectInfo {
  const tensor = info?.tensor;
  return Object.freeze({
    id: info?.id ?? "",
    tags: Object.freeze([...(info?.tags ?? [])]),
    description: info?.description ?? "",
    dtype: tensor?.dtype ?? proto.DType.DTYPE_UNSPECIFIED,
    shape: Object.freeze((tensor?.shape ?? []).map(num)),
    nbytes: num(tensor?.nbytes ?? 0n),
    sha256: tensor?.sha256 ?? new Uint8Array(0),
    digest: tensor?.digest ?? new Uint8Array(0),
  });
}

/** A `DatasetInfo` message as a {@link DatasetInfo}. */
export function datasetInfoFromProto(info: proto.DatasetInfo): DatasetInfo {
  return Object.freeze({
    key: info.key,
    sampleCount: num(info.sampleCount),
    featureShape: Object.freeze(info.featureShape.map(num)),
    targetShape: Object.freeze(info.targetShape.map(num)),
    featureDtype: info.featureDtype,
    targetDtype: info.targetDtype,
    description: info.description,
  });
}

/** A `MethodInfo` message as a {@link MethodInfo}. */
export function methodInfoFromProto(info: proto.MethodInfo): MethodInfo {
  return Object.freeze({
    name: info.name,
    description: info.description,
    parameters: Object.freeze(
      info.parameters.map((p) => Object.freeze({ name: p.name, type: p.type, required: p.required, kind: p.kind })),
    ),
    returns: info.returns,
  });
}

/** A typed array the client accepts as a tensor, and the dtype it travels as. */
export type TypedTensorArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array;

/** What `Client.send` accepts: a tensor, or a typed array (1-d unless a shape is given). */
export type TensorInput = HostTensor | TypedTensorArray;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function dtypeOfArray(array: TypedTensorArray): proto.DType {
  if (array instanceof Float32Array) return proto.DType.DTYPE_FLOAT32;
  if (array instanceof Float64Array) return proto.DType.DTYPE_FLOAT64;
  if (array instanceof Int8Array) return proto.DType.DTYPE_INT8;
  if (array instanceof Int16Array) return proto.DType.DTYPE_INT16;
  if (array instanceof Int32Array) return proto.DType.DTYPE_INT32;
  if (array instanceof BigInt64Array) return proto.DType.DTYPE_INT64;
  if (array instanceof Uint8Array) return proto.DType.DTYPE_UINT8;
  throw new InvalidArgumentError(`a ${(array as object).constructor.name} cannot be sent as a tensor`);
}

/**
 * A {@link TensorInput} as a validated {@link HostTensor} (§7.2). Typed arrays are viewed, not copied:
 * their bytes are already little-endian row-major on the little-endian machines Node runs on (§7.2.1).
 */
export function toHostTensor(input: TensorInput, shape?: readonly number[]): HostTensor {
  if (input instanceof HostTensor) {
    if (shape !== undefined) {
      return HostTensor.create(input.dtype, shape, input.data);
    }
    return input;
  }
  if (!LITTLE_ENDIAN) {
    throw new InvalidArgumentError("typed arrays are sent as they are in memory, which is big-endian here");
  }
  const dtype = dtypeOfArray(input);
  const bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  return HostTensor.create(dtype, shape ?? [input.length], bytes);
}

/**
 * The elements of a tensor as a typed array of its dtype (FLOAT32, FLOAT64, INT8, INT16, INT32, INT64,
 * UINT8, BOOL as Uint8Array). A view when the bytes are aligned for it, a copy otherwise. Other dtypes
 * (FLOAT16, BFLOAT16, the complex types) have no typed array: use `tensor.data`.
 */
export function typedArrayOf(tensor: HostTensor): TypedTensorArray {
  const width = dtypeWidth(tensor.dtype);
  const data = tensor.data.byteOffset % width === 0 ? tensor.data : new Uint8Array(tensor.data);
  const count = data.length / width;
  switch (tensor.dtype) {
    case proto.DType.DTYPE_FLOAT32:
      return new Float32Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_FLOAT64:
      return new Float64Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_INT8:
      return new Int8Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_INT16:
      return new Int16Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_INT32:
      return new Int32Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_INT64:
      return new BigInt64Array(data.buffer, data.byteOffset, count);
    case proto.DType.DTYPE_UINT8:
    case proto.DType.DTYPE_BOOL:
      return data;
    default:
      throw new InvalidArgumentError(`no typed array holds ${proto.DType[tensor.dtype]}; use tensor.data`);
  }
}
