/**
 * Custom calls (docs/protocol.md §11): an explicit registry of the methods a data owner exposes, each
 * with declared parameters, and the binding of a call's `Value` arguments to them. Nothing that is not
 * registered can be reached by name (§11.1).
 */
import { create } from "@bufbuild/protobuf";
import {
  InvalidArgumentError,
  InternalError,
  MethodNotFoundError,
  ResourceExhaustedError,
} from "../wire/errors.js";
import { callArgsSize } from "../wire/envelope.js";
import {
  CallReplySchema,
  MethodInfoSchema,
  ParameterInfoSchema,
  type CallRequest as ProtoCallRequest,
  type CallReply as ProtoCallReply,
  type MethodInfo as ProtoMethodInfo,
} from "../wire/proto.js";
import {
  MAX_SEND_DEPTH,
  ValueTooDeepError,
  jsValueKind,
  mapEntriesFromProto,
  valueFromProto,
  valueToProto,
  type JsMap,
  type JsValue,
  type ValueInput,
  type ValueKind,
} from "../wire/values.js";

/** A parameter's declared type: a value kind or `any` (§11.6.3). */
export type ParameterType = ValueKind | "any";

/** How a parameter binds (§11.6.3). */
export type ParameterKind = "positional" | "positional_or_keyword" | "keyword" | "var_positional" | "var_keyword";

/** One declared parameter. */
export interface ParameterSpec {
  readonly name: string;
  /** Default `any`. */
  readonly type?: ParameterType;
  /** Default `positional_or_keyword`. */
  readonly kind?: ParameterKind;
  /** The value used when the parameter is not given; a parameter without one is required. */
  readonly default?: JsValue;
}

/**
 * The bound arguments a method receives: one entry per parameter name; a `var_positional` parameter
 * holds an array, a `var_keyword` parameter a `Map` (in the order given).
 */
export type BoundArguments = Record<string, JsValue>;

/** What a method may use besides its arguments. */
export interface CallContext {
  /** The caller's identity (§15.2). */
  readonly identity: string;
  /** Aborted when the call is cancelled, expires or its connection ends; long work should stop then. */
  readonly signal: AbortSignal;
  /** Pushes a notification to the calling connection (§6.4); throws when the server cannot send one. */
  notify(topic: string, payload: ValueInput): void;
}

/** An exposed method's implementation. Returning `undefined` answers null (§11.5.2). */
export type MethodFunction = (
  args: BoundArguments,
  ctx: CallContext,
) => ValueInput | undefined | void | Promise<ValueInput | undefined | void>;

/** How a method is exposed. */
export interface MethodOptions {
  /** Short text for people (§11.6.2). */
  description?: string;
  /** The parameters, in declaration order. Default: none. */
  params?: readonly ParameterSpec[];
  /** The kind of the result, as in `ParameterInfo.type`. Default `any`. */
  returns?: ParameterType;
}

interface Parameter {
  readonly name: string;
  readonly type: ParameterType;
  readonly kind: ParameterKind;
  readonly hasDefault: boolean;
  readonly default: JsValue | undefined;
}

interface Method {
  readonly name: string;
  readonly fn: MethodFunction;
  readonly description: string;
  readonly params: readonly Parameter[];
  readonly returns: ParameterType;
}

const TYPES: ReadonlySet<string> = new Set(["null", "bool", "int", "double", "string", "bytes", "tensor", "list", "map", "any"]);
const KINDS: ReadonlySet<string> = new Set(["positional", "positional_or_keyword", "keyword", "var_positional", "var_keyword"]);

/** The exposed methods of one server. */
export class MethodRegistry {
  private readonly methods = new Map<string, Method>();

  /**
   * Exposes `fn` as `name`. Throws a TypeError for a declaration Python could not have either: an empty or
   * repeated name, an unknown type or kind, parameters out of order (positional-only, then
   * positional-or-keyword, then `*args`, then keyword-only, then `**kwargs`), a required positional
   * parameter after one with a default, or a default on a variadic parameter.
   */
  register(name: string, fn: MethodFunction, options: MethodOptions = {}): void {
    if (name === "") throw new TypeError("a method needs a name");
    if (this.methods.has(name)) throw new TypeError(`method ${JSON.stringify(name)} is already exposed`);
    const returns = options.returns ?? "any";
    if (!TYPES.has(returns)) throw new TypeError(`method ${name}: unknown return type ${returns}`);
    const order: ParameterKind[] = ["positional", "positional_or_keyword", "var_positional", "keyword", "var_keyword"];
    const params: Parameter[] = [];
    let rank = 0;
    let positionalDefault = false;
    const seen = new Set<string>();
    for (const spec of options.params ?? []) {
      const type = spec.type ?? "any";
      const kind = spec.kind ?? "positional_or_keyword";
      if (spec.name === "" || seen.has(spec.name)) throw new TypeError(`method ${name}: empty or repeated parameter name ${JSON.stringify(spec.name)}`);
      if (!TYPES.has(type)) throw new TypeError(`method ${name}: parameter ${spec.name} has unknown type ${type}`);
      if (!KINDS.has(kind)) throw new TypeError(`method ${name}: parameter ${spec.name} has unknown kind ${kind}`);
      const r = order.indexOf(kind);
      if (r < rank || ((kind === "var_positional" || kind === "var_keyword") && r === rank && params.length > 0 && params.at(-1)!.kind === kind)) {
        throw new TypeError(`method ${name}: parameter ${spec.name} (${kind}) is out of order`);
      }
      rank = r;
      const hasDefault = spec.default !== undefined;
      if (hasDefault && (kind === "var_positional" || kind === "var_keyword")) {
        throw new TypeError(`method ${name}: variadic parameter ${spec.name} cannot have a default`);
      }
      if (kind === "positional" || kind === "positional_or_keyword") {
        if (positionalDefault && !hasDefault) throw new TypeError(`method ${name}: required parameter ${spec.name} follows one with a default`);
        positionalDefault ||= hasDefault;
      }
      seen.add(spec.name);
      params.push({ name: spec.name, type, kind, hasDefault, default: spec.default });
    }
    this.methods.set(name, { name, fn, description: options.description ?? "", params, returns });
  }

  /** True when `name` is exposed. */
  has(name: string): boolean {
    return this.methods.has(name);
  }

  /** Every exposed method as `MethodInfo`, sorted by name byte-wise (§11.6.1). */
  list(): ProtoMethodInfo[] {
    const names = [...this.methods.keys()].sort((a, b) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
    return names.map((name) => {
      const method = this.methods.get(name)!;
      return create(MethodInfoSchema, {
        name,
        description: method.description,
        returns: method.returns,
        parameters: method.params.map((p) =>
          create(ParameterInfoSchema, {
            name: p.name,
            type: p.type,
            kind: p.kind,
            required: !p.hasDefault && p.kind !== "var_positional" && p.kind !== "var_keyword",
          }),
        ),
      });
    });
  }

  /**
   * Runs a call: the method must exist (§11.1.3), its arguments fit `maxArgsBytes` (§11.3), be valid values
   * (§11.2.7) and bind to its parameters (§11.2); the result must be a value (§11.4.4).
   */
  async call(request: ProtoCallRequest, ctx: CallContext, maxArgsBytes: number): Promise<ProtoCallReply> {
    const method = this.methods.get(request.method);
    if (method === undefined) {
      throw new MethodNotFoundError(`no exposed method ${JSON.stringify(request.method)}`);
    }
    if (maxArgsBytes > 0) {
      const size = callArgsSize(request);
      if (size > maxArgsBytes) {
        throw new ResourceExhaustedError(`the call's arguments take ${size} bytes, above the limit of ${maxArgsBytes}`, {
          details: { limit: String(maxArgsBytes) },
        });
      }
    }
    const args = request.args.map((arg, i) => valueFromProto(arg, `argument ${i}`));
    const kwargs = mapEntriesFromProto(request.kwargs, "keyword arguments");
    const bound = bind(method, args, kwargs);
    ctx.signal.throwIfAborted();
    // §11.4.1, §11.4.2: a protocol error the method throws keeps its code; anything else reaches the session
    // as thrown, which answers a generic INTERNAL with an error id unless the owner exposes errors (§13.1.7).
    const result = await method.fn(bound, ctx);
    let value;
    try {
      value = valueToProto(result === undefined ? null : result, "result");
    } catch (err) {
      if (err instanceof ValueTooDeepError) {
        // A value, but deeper than any reply may carry (echo of a 31-level argument, say): the client could
        // not decode the reply, so it gets a typed error in its place (§8.3.7).
        throw new InvalidArgumentError(
          `method ${method.name} returned a value nested deeper than ${MAX_SEND_DEPTH} levels, more than a reply may carry (§8.3.7)`,
          { details: err.details },
        );
      }
      throw new InternalError(`method ${method.name} returned something that is not a Value: ${(err as Error).message}`);
    }
    return create(CallReplySchema, { result: value });
  }
}

function checkType(method: Method, param: Parameter, value: JsValue, what: string): JsValue {
  if (param.type === "any") return value;
  const kind = jsValueKind(value);
  if (kind === param.type) return value;
  if (param.type === "double" && kind === "int") return Number(value as bigint); // §11.2.5
  throw new InvalidArgumentError(`${method.name}: ${what} must be ${param.type}, not ${kind} (§11.2.3)`);
}

/** Binds positional and keyword arguments to `method`'s parameters as §11.2 says. */
function bind(method: Method, args: readonly JsValue[], kwargs: JsMap): BoundArguments {
  const bound: BoundArguments = {};
  const given = new Set<string>();
  const positional = method.params.filter((p) => p.kind === "positional" || p.kind === "positional_or_keyword");
  const varPositional = method.params.find((p) => p.kind === "var_positional");
  const varKeyword = method.params.find((p) => p.kind === "var_keyword");
  if (args.length > positional.length && varPositional === undefined) {
    throw new InvalidArgumentError(
      `${method.name} takes at most ${positional.length} positional argument(s), ${args.length} given (§11.2.2)`,
    );
  }
  args.forEach((value, i) => {
    const param = positional[i];
    if (param !== undefined) {
      bound[param.name] = checkType(method, param, value, `parameter ${param.name}`);
      given.add(param.name);
    }
  });
  if (varPositional !== undefined) {
    bound[varPositional.name] = args
      .slice(positional.length)
      .map((value, i) => checkType(method, varPositional, value, `extra positional argument ${i}`));
  }
  const extra: JsMap = new Map();
  for (const [key, value] of kwargs) {
    const param = method.params.find((p) => p.name === key && p.kind !== "var_positional" && p.kind !== "var_keyword");
    if (param === undefined || param.kind === "positional") {
      if (param !== undefined && varKeyword === undefined) {
        throw new InvalidArgumentError(`${method.name}: positional-only parameter ${key} given by keyword (§11.2.2)`);
      }
      if (varKeyword === undefined) {
        throw new InvalidArgumentError(`${method.name} has no parameter ${JSON.stringify(key)} (§11.2.2)`);
      }
      extra.set(key, checkType(method, varKeyword, value, `keyword argument ${key}`));
      continue;
    }
    if (given.has(key)) {
      throw new InvalidArgumentError(`${method.name}: parameter ${key} given both by position and by keyword (§11.2.2)`);
    }
    bound[param.name] = checkType(method, param, value, `parameter ${key}`);
    given.add(key);
  }
  if (varKeyword !== undefined) bound[varKeyword.name] = extra;
  for (const param of method.params) {
    if (param.kind === "var_positional" || param.kind === "var_keyword" || given.has(param.name)) continue;
    if (!param.hasDefault) {
      throw new InvalidArgumentError(`${method.name}: missing required parameter ${param.name} (§11.2.2)`);
    }
    bound[param.name] = param.default!; // §11.2.6
  }
  return bound;
}
