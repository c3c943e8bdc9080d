"""Sections 12 and 18.3: configuring, fitting and evaluating the registered model, and moving weights.

Expected numbers are computed locally from the fixture of section 18.1 with the same arithmetic the
spec prescribes (one SGD step per batch, mean losses), and compared within float32 tolerance, since
bit-for-bit equality across servers is not required (§12.3.8).
"""

# ruff: noqa: RUF001  (rule quotes keep the spec's own multiplication and minus signs)

from __future__ import annotations

import hashlib
import io
import itertools
import math
import warnings
from typing import Any

import numpy as np
from hypothesis import strategies as st

from fedproto_pb.v1 import objects_pb2, tensor_pb2, training_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from ..checks import check, fail, skip
from ..context import Context
from ..registry import case
from ..spec import DTYPE_WIDTHS, dtype_name
from ..values import make_tensor, to_value
from ..wire import Connection, Reply
from ._common import Stopwatch, check_examples, refused
from ._table import Probe, Row, Then, register

#: Nothing to import: the cases register themselves with the registry.
__all__: list[str] = []

TRAIN = ("training",)
MODEL = "conformance-linear"
LOSSES = ("mse", "l1", "smooth_l1", "cross_entropy", "nll", "bce", "bce_with_logits", "huber", "kl_div")
FLOAT32 = tensor_pb2.DTYPE_FLOAT32
RTOL, ATOL = 1e-4, 1e-5


# -- the fixture and local arithmetic -----------------------------------------------------------------


def fixture() -> tuple[np.ndarray, np.ndarray]:
    """The 64 samples of section 18.1, computed as the spec says (binary64, then rounded to binary32)."""
    x = np.array([[((i * 4 + j) % 11) / 10 - 0.5 for j in range(4)] for i in range(64)], dtype=np.float64)
    y = np.array([(i * 7) % 3 for i in range(64)], dtype=np.int64)
    return x.astype(np.float32), y


def initial_weights(seed: int = 1) -> dict[str, np.ndarray]:
    """Weights of the registered model without argmax ties on the fixture."""
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.normal(0, 0.8, size=(3, 4)).astype(np.float32),
        "bias": rng.normal(0, 0.2, size=(3,)).astype(np.float32),
    }


def named(weights: dict[str, np.ndarray]) -> list[tensor_pb2.NamedTensor]:
    """NamedTensors of float32 arrays, in the dict's order."""
    return [
        tensor_pb2.NamedTensor(
            name=name,
            tensor=make_tensor(FLOAT32, list(a.shape), np.ascontiguousarray(a, dtype="<f4").tobytes()),
        )
        for name, a in weights.items()
    ]


def raw_named(name: str, data: bytes, shape: list[int], dtype: int = FLOAT32) -> tensor_pb2.NamedTensor:
    """A NamedTensor of raw bytes (no validation: invalid ones are built on purpose too)."""
    return tensor_pb2.NamedTensor(name=name, tensor=make_tensor(dtype, shape, data))


def from_named(tensors: Any) -> dict[str, np.ndarray]:
    """Arrays of float32 NamedTensors (other dtypes fail the case)."""
    out = {}
    for t in tensors:
        if t.tensor.dtype != FLOAT32:
            fail(f"weight {t.name!r} is {dtype_name(t.tensor.dtype)}, expected FLOAT32 (§18.3.2)")
        out[t.name] = np.frombuffer(t.tensor.data, dtype="<f4").reshape(list(t.tensor.shape))
    return out


def local_fit(
    weights: dict[str, np.ndarray],
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    momentum: float = 0.0,
    max_batches: int = 0,
    fits: int = 1,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """SGD with cross-entropy on the fixture in dataset order; the optimizer state persists across fits."""
    import torch

    x, y = fixture()
    w = torch.tensor(weights["weight"], requires_grad=True)
    b = torch.tensor(weights["bias"], requires_grad=True)
    optimizer = torch.optim.SGD([w, b], lr=lr, momentum=momentum)
    losses = []
    for _ in range(fits):
        done = 0
        for _epoch in range(epochs):
            for start in range(0, 64, batch_size):
                if max_batches > 0 and done >= max_batches:
                    break
                xb = torch.tensor(x[start : start + batch_size])
                yb = torch.tensor(y[start : start + batch_size])
                loss = torch.nn.functional.cross_entropy(xb @ w.T + b, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                done += 1
    return {"weight": w.detach().numpy(), "bias": b.detach().numpy()}, losses


def local_eval(weights: dict[str, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy per sample, predicted classes and target classes on the fixture."""
    import torch

    x, y = fixture()
    out = torch.tensor(x) @ torch.tensor(weights["weight"]).T + torch.tensor(weights["bias"])
    loss = float(torch.nn.functional.cross_entropy(out, torch.tensor(y)))
    return loss, out.argmax(dim=1).numpy(), y


def near(a: float, b: float) -> bool:
    """Whether two losses agree within float32 tolerance."""
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """Whether two state dicts agree within float32 tolerance."""
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=RTOL, atol=ATOL) for k in a)


# -- requests ------------------------------------------------------------------------------------------


def config(
    *,
    lr: float = 0.1,
    batch_size: int = 8,
    epochs: int = 1,
    loss: str = "cross_entropy",
    optimizer: str = "SGD",
    momentum: float | None = None,
    max_nr_batches: int = 0,
    weights: dict[str, np.ndarray] | None = None,
) -> training_pb2.TrainConfig:
    """A TrainConfig for the registered model, in dataset order."""
    cfg = training_pb2.TrainConfig(
        registered_model=MODEL,
        loss_name=loss,
        optimizer=optimizer,
        batch_size=batch_size,
        epochs=epochs,
        shuffle=False,
        max_nr_batches=max_nr_batches,
        seed=7,
    )
    cfg.optimizer_args.add(key="lr").value.CopyFrom(to_value(lr))
    if momentum is not None:
        cfg.optimizer_args.add(key="momentum").value.CopyFrom(to_value(momentum))
    if weights is not None:
        cfg.initial_weights.extend(named(weights))
    return cfg


async def configure(conn: Connection, cfg: training_pb2.TrainConfig) -> training_pb2.SetTrainConfigReply:
    """set_train_config, which must succeed."""
    return await conn.expect("set_train_config", training_pb2.SetTrainConfigRequest(config=cfg))


async def _configured(conn: Connection, seed: int) -> dict[str, np.ndarray]:
    """Configure the registered model with the weights of ``seed``; those weights."""
    weights = initial_weights(seed)
    await configure(conn, config(weights=weights))
    return weights


async def get_weights(conn: Connection) -> dict[str, np.ndarray]:
    """get_weights, as arrays."""
    return from_named((await conn.expect("get_weights", training_pb2.GetWeightsRequest())).weights)


async def fit(
    conn: Connection, **fields: Any
) -> tuple[training_pb2.FitReply, list[training_pb2.FitProgress]]:
    """A fit on the fixture; its reply and progress events."""
    request = training_pb2.FitRequest(dataset_key="conformance", **fields)
    reply = await conn.call("fit", request, timeout=max(conn.timeout, 30))
    body = reply.expect("fit_reply")
    progress = []
    for event in reply.events:
        if event.WhichOneof("body") != "fit_progress":
            fail(f"fit request {reply.request_id} got {event.WhichOneof('body')} before its reply (§5.3.2)")
        progress.append(event.fit_progress)
    return body, progress


async def evaluate(conn: Connection, **fields: Any) -> training_pb2.EvaluateReply:
    """An evaluate on the fixture, which must succeed; ``fields`` as in EvaluateRequest."""
    return await conn.expect("evaluate", training_pb2.EvaluateRequest(dataset_key="conformance", **fields))


#: Every part of an EvaluateReply asked for (§12.5.6 to §12.5.9).
EVERYTHING = {"return_loss": True, "return_raw_accuracy": True, "return_histograms": True}


# -- cases: requests to be refused (or accepted), as a table ------------------------------------------

INVALID = ErrorCode.ERROR_CODE_INVALID_ARGUMENT
NOT_FOUND = ErrorCode.ERROR_CODE_NOT_FOUND
DENIED = ErrorCode.ERROR_CODE_PERMISSION_DENIED


def _set_config(what: str, cfg: training_pb2.TrainConfig | None, *codes: int) -> Probe:
    """set_train_config of ``cfg`` (None: unset): refused with one of ``codes``, or accepted without."""
    request = training_pb2.SetTrainConfigRequest(config=cfg)
    return Probe(f"set_train_config with {what}", "set_train_config", request, codes, ok=not codes)


def _without(field: str) -> training_pb2.TrainConfig:
    cfg = config()
    cfg.ClearField(field)
    return cfg


def _optimizer_args(*pairs: tuple[str, Any], optimizer: str = "SGD") -> training_pb2.TrainConfig:
    """A config whose optimizer_args are exactly ``pairs`` (duplicates kept)."""
    cfg = config(optimizer=optimizer)
    del cfg.optimizer_args[:]
    for key, value in pairs:
        cfg.optimizer_args.add(key=key).value.CopyFrom(to_value(value))
    return cfg


def _replaced(field: str, value: Any) -> training_pb2.TrainConfig:
    """``config()`` with ``field`` set to ``value`` (a list extends a repeated field)."""
    cfg = config()
    if isinstance(value, list):
        getattr(cfg, field).extend(value)
    else:
        setattr(cfg, field, value)
    return cfg


async def _weights_only(conn: Connection) -> bool:
    """Whether the server is weights-only (ListModelsReply.weights_only, §12.2.4)."""
    return bool((await conn.expect("list_models", training_pb2.ListModelsRequest())).weights_only)


async def _no_config(ctx: Context, conn: Connection) -> list[Probe]:
    probe = await conn.call("get_weights", training_pb2.GetWeightsRequest())
    if probe.kind == "get_weights_reply":
        skip("the suite's identity already has a train config on this server (run against a fresh server)")
    refused(probe, "get_weights without a train config", ErrorCode.ERROR_CODE_FAILED_PRECONDITION)
    return [
        Probe(f"{kind} without a train config", kind, message, (ErrorCode.ERROR_CODE_FAILED_PRECONDITION,))
        for kind, message in (
            ("fit", training_pb2.FitRequest(dataset_key="conformance")),
            ("evaluate", training_pb2.EvaluateRequest(dataset_key="conformance", return_loss=True)),
            ("set_weights", training_pb2.SetWeightsRequest(weights=named(initial_weights()))),
        )
    ]


def _unknown_model(ctx: Context, conn: Connection) -> list[Probe]:
    name = "no-such-model-" + ctx.unique()
    return [_set_config(f"registered_model {name!r}", _replaced("registered_model", name), NOT_FOUND)]


async def _bad_torchscript(ctx: Context, conn: Connection) -> list[Probe]:
    # a weights-only server refuses any model_torchscript; a loss_torchscript it may refuse either way
    model_codes, loss_codes = (
        ((DENIED,), (DENIED, INVALID)) if await _weights_only(conn) else ((INVALID,),) * 2
    )
    return [
        _set_config(f"{field} of {len(blob)} junk bytes", _replaced(field, blob), *codes)
        for blob in (b"", b"not a torchscript archive", b"PK\x03\x04" + bytes(40))
        for field, codes in (("model_torchscript", model_codes), ("loss_torchscript", loss_codes))
    ]


_LOSS_NAMES = [
    *(_set_config(f"loss_name {loss!r}", config(loss=loss)) for loss in LOSSES),
    *(
        _set_config(f"loss_name {loss!r}", config(loss=loss), INVALID)
        for loss in ("CrossEntropy", "cross-entropy", "", "MSELoss", "__import__")
    ),
]

_OPTIMIZERS = [
    *(
        _set_config(f"optimizer {name!r}", config(optimizer=name, lr=0.01))
        for name in ("SGD", "Adam", "AdamW")
    ),
    *(
        _set_config(f"optimizer {name!r}", config(optimizer=name), INVALID)
        for name in ("NotAnOptimizer", "", "sgd", "lr_scheduler", "Optimizer", "os", "__class__")
    ),
]

_OPTIMIZER_ARGS = [
    _set_config(
        "Adam(lr=0.01, betas=[0.9, 0.99], amsgrad=True)",
        _optimizer_args(("lr", 0.01), ("betas", [0.9, 0.99]), ("amsgrad", True), optimizer="Adam"),
    ),
    _set_config("lr as a string", _optimizer_args(("lr", "0.1")), INVALID),
    _set_config("a keyword the constructor rejects", _optimizer_args(("lr", 0.1), ("bogus", 1)), INVALID),
    _set_config("a negative learning rate", _optimizer_args(("lr", -1.0)), INVALID),
    _set_config("a map value", _optimizer_args(("lr", 0.1), ("momentum", {"a": 1})), INVALID),
    _set_config("a duplicate key", _optimizer_args(("lr", 0.1), ("lr", 0.2)), INVALID),
]

_BATCH_AND_EPOCHS = [
    _set_config("batch_size 0", config(batch_size=0), INVALID),
    _set_config("epochs 0", config(epochs=0), INVALID),
    _set_config("batch_size 1 and epochs 1", config(batch_size=1, epochs=1)),
]


async def _initial_weights(ctx: Context, conn: Connection) -> list[Probe]:
    weights = await _configured(conn, 3)
    check(close(await get_weights(conn), weights), "get_weights after set_train_config differs from them")
    f64 = raw_named("bias", bytes(24), [3], tensor_pb2.DTYPE_FLOAT64)
    return [
        _set_config(f"initial_weights with {what}", _replaced("initial_weights", bad), INVALID)
        for what, bad in (
            ("an unknown name", named({"weights": weights["weight"]})),
            ("a wrong shape", named({"weight": np.zeros((4, 3), np.float32)})),
            ("a wrong dtype", [f64]),
        )
    ]


async def _weights_only_refuses(ctx: Context, conn: Connection) -> list[Probe]:
    if not await _weights_only(conn):
        skip("the server is not weights-only")
    return [_set_config("model_torchscript", _replaced("model_torchscript", b"PK\x03\x04"), DENIED)]


async def _unknown_dataset(ctx: Context, conn: Connection) -> list[Probe]:
    await configure(conn, config())
    return [
        Probe(f"{kind} of dataset {key!r}", kind, message(dataset_key=key), (NOT_FOUND,))
        for key in ("no-such-dataset", "", "Conformance")
        for kind, message in (("fit", training_pb2.FitRequest), ("evaluate", training_pb2.EvaluateRequest))
    ]


register(
    Row(
        "training/12.3.3/no-config-failed-precondition",
        rule="A fit when the identity has no train config MUST be answered with FAILED_PRECONDITION (also "
        "evaluate, §12.5.3, and get_weights and set_weights, §12.6.3).",
        probes=_no_config,
    ),
    Row(
        "training/12.1.2/config-unset",
        rule="SetTrainConfigRequest.config unset MUST be answered with INVALID_ARGUMENT.",
        probes=[_set_config("no config", None, INVALID)],
    ),
    Row(
        "training/12.1.3/model-unset",
        rule="TrainConfig.model unset MUST be answered with INVALID_ARGUMENT.",
        probes=[_set_config("no model", _without("model"), INVALID)],
    ),
    Row(
        "training/12.1.4/loss-unset",
        rule="TrainConfig.loss unset MUST be answered with INVALID_ARGUMENT.",
        probes=[_set_config("no loss", _without("loss"), INVALID)],
    ),
    Row(
        "training/12.1.5/unknown-registered-model",
        rule="A registered_model that names no registered architecture (§12.7) MUST be answered with "
        "NOT_FOUND.",
        probes=_unknown_model,
    ),
    Row(
        "training/12.1.7/torchscript-fails-to-load",
        rule="A model_torchscript or loss_torchscript that fails to load MUST be answered with "
        "INVALID_ARGUMENT (a weights-only server answers PERMISSION_DENIED instead, §12.2.5 and §12.2.6).",
        probes=_bad_torchscript,
    ),
    Row(
        "training/12.1.8/loss-names",
        rule="A loss_name that is not one of the built-in names below MUST be answered with "
        "INVALID_ARGUMENT: mse, l1, smooth_l1, cross_entropy, nll, bce, bce_with_logits, huber, kl_div.",
        probes=_LOSS_NAMES,
    ),
    Row(
        "training/12.1.9/optimizer-names",
        rule="optimizer MUST name an optimizer class in torch.optim (a subclass of torch.optim.Optimizer) "
        "that accepts the given optimizer_args; otherwise the server MUST answer INVALID_ARGUMENT.",
        probes=_OPTIMIZERS,
    ),
    Row(
        "training/12.1.10/optimizer-args",
        rule="optimizer_args are keyword arguments of the optimizer's constructor (after the model's "
        "parameters); their values MUST be ints, doubles, bools or lists of numbers (passed as tuples), "
        "and any other kind, a duplicate key, or a constructor that rejects them MUST be answered with "
        "INVALID_ARGUMENT.",
        probes=_OPTIMIZER_ARGS,
    ),
    Row(
        "training/12.1.11/batch-size-and-epochs",
        rule="batch_size MUST be at least 1 and epochs MUST be at least 1; otherwise the server MUST answer "
        "INVALID_ARGUMENT.",
        probes=_BATCH_AND_EPOCHS,
    ),
    Row(
        "training/12.1.12/initial-weights",
        rule="initial_weights are loaded into the model before it is used; a name that is not in the model's "
        "state dict, or a shape or dtype that differs from the model's, MUST be answered with "
        "INVALID_ARGUMENT.",
        probes=_initial_weights,
    ),
    Row(
        "training/12.2.5/weights-only-refuses-torchscript",
        rule="A weights-only server MUST answer a TrainConfig with model_torchscript with PERMISSION_DENIED.",
        probes=_weights_only_refuses,
    ),
    Row(
        "training/12.3.2/fit-unknown-dataset",
        rule="A dataset_key that names no dataset MUST be answered with NOT_FOUND (for evaluate too, "
        "§12.5.2).",
        probes=_unknown_dataset,
    ),
    needs=TRAIN,
)


@case(
    "training/12.7.1/list-models",
    rule="list_models returns ListModelsReply.names, the registered architecture names, sorted (byte-wise), "
    "and weights_only (§18.3.1: conformance-linear is registered).",
    needs=TRAIN,
)
async def _case_list_models(ctx: Context) -> None:
    conn = await ctx.connect()
    names = list((await conn.expect("list_models", training_pb2.ListModelsRequest())).names)
    check(names == sorted(names, key=lambda n: n.encode()), f"list_models gives names in the order {names}")
    check(MODEL in names, f"list_models gives {names}, without {MODEL!r}")


@case(
    "training/18.3.2/registered-model-state",
    rule="Its state dict has exactly two entries, in this order: weight with shape [3, 4] and bias with "
    "shape [3], both DTYPE_FLOAT32 (§12.1.1: parameter_count and state_names in the reply).",
    needs=TRAIN,
)
async def _case_registered_model(ctx: Context) -> None:
    conn = await ctx.connect()
    reply = await configure(conn, config())
    check(reply.parameter_count == 15, f"parameter_count is {reply.parameter_count}, expected 15")
    check(list(reply.state_names) == ["weight", "bias"], f"state_names are {list(reply.state_names)}")
    weights = (await conn.expect("get_weights", training_pb2.GetWeightsRequest())).weights
    got = [(w.name, list(w.tensor.shape), w.tensor.dtype) for w in weights]
    check(got == [("weight", [3, 4], FLOAT32), ("bias", [3], FLOAT32)], f"get_weights gives {got} (§12.6.1)")


@case(
    "training/12.1.14/failed-config-keeps-state",
    rule="A failed set_train_config MUST leave the identity's previous training state (if any) unchanged.",
    needs=TRAIN,
)
async def _case_failed_config(ctx: Context) -> None:
    conn = await ctx.connect()
    weights = initial_weights(4)
    await configure(conn, config(weights=weights, batch_size=64))
    await _set_config("an unknown loss", config(loss="no-such-loss"), INVALID).send(conn)
    check(close(await get_weights(conn), weights), "a refused set_train_config changed the weights")
    body, _ = await fit(conn)
    check(body.batches == 1, f"after a refused config a fit ran {body.batches} batches; the old config has 1")


@case(
    "training/12.1.1/torchscript-model",
    rule="set_train_config sets or replaces the identity's TrainConfig, builds a fresh model and "
    "optimizer from it, and answers SetTrainConfigReply with parameter_count (the number of "
    "trainable parameter elements) and state_names (the model's state-dict names, in order) "
    "(§12.2.1: model_torchscript holds the bytes torch.jit.save writes).",
    needs=TRAIN,
)
async def _case_torchscript(ctx: Context) -> None:
    import torch

    conn = await ctx.connect()
    if await _weights_only(conn):
        skip("the server is weights-only (§12.2.4)")
    with warnings.catch_warnings():  # newer torch deprecates TorchScript, which is what §12.2 names
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(
            torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        )
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
    cfg = config()
    cfg.model_torchscript = buffer.getvalue()
    reply = await configure(conn, cfg)
    count = reply.parameter_count
    check(count == 4 * 5 + 5 + 5 * 3 + 3, f"parameter_count is {count}, expected 43")
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    check(list(reply.state_names) == names, f"state_names are {list(reply.state_names)}, expected {names}")
    body, _ = await fit(conn)
    check(body.samples == 64, f"a fit of the TorchScript model processed {body.samples} samples")


@case(
    "training/12.3.6/sgd-step-matches",
    rule="For each batch the server computes the output and the loss, back-propagates it and takes one "
    "optimizer step (§12.3.4 and §12.3.5: batches of batch_size in dataset order, the last may be smaller).",
    needs=TRAIN,
)
async def _case_sgd(ctx: Context) -> None:
    conn = await ctx.connect()
    start = initial_weights(5)
    await configure(conn, config(weights=start, batch_size=10, epochs=2, lr=0.5))
    body, _ = await fit(conn, return_weights=True)
    expected, losses = local_fit(start, lr=0.5, batch_size=10, epochs=2)
    got = from_named(body.weights)
    if not close(got, expected):
        fail(
            "after 2 epochs of batches of 10 the weights differ from one SGD step per batch in dataset "
            "order: "
            f"got weight[0]={got.get('weight', np.zeros((1, 4)))[0].tolist()}, expected "
            f"{expected['weight'][0].tolist()}"
        )
    check(near(body.final_loss, losses[-1]), f"final_loss is {body.final_loss}, not {losses[-1]}")
    mean = sum(losses) / len(losses)
    check(near(body.mean_loss, mean), f"mean_loss is {body.mean_loss}, not {mean}")


@case(
    "training/12.3.10/fit-reply-counts",
    rule="FitReply fields: samples (counting repeats across epochs), batches, epochs (run), dataset_size "
    "(the number of samples in the dataset).",
    needs=TRAIN,
)
async def _case_fit_counts(ctx: Context) -> None:
    conn = await ctx.connect()
    await configure(conn, config(batch_size=10, epochs=3))
    body, _ = await fit(conn)
    got, expected = (body.samples, body.batches, body.epochs, body.dataset_size), (192, 21, 3, 64)
    check(got == expected, f"(samples, batches, epochs, dataset_size) are {got}, expected {expected}")
    check(math.isfinite(body.final_loss) and body.seconds >= 0, "final_loss is not finite or seconds < 0")


@case(
    "training/12.3.7/max-nr-batches",
    rule="When max_nr_batches is greater than 0, the fit stops after that many batches in total, counted "
    "across all its epochs; 0 or a negative value means no cap.",
    needs=TRAIN,
)
async def _case_max_batches(ctx: Context) -> None:
    conn = await ctx.connect()
    for cap, expected in ((10, (80, 10, 2)), (3, (24, 3, 1)), (-1, (192, 24, 3)), (0, (192, 24, 3))):
        await configure(conn, config(batch_size=8, epochs=3, max_nr_batches=cap))
        body, progress = await fit(conn, progress_every=1)
        got = (body.samples, body.batches, body.epochs)
        check(got == expected, f"max_nr_batches={cap}: (samples, batches, epochs) are {got}, not {expected}")
        if cap == 10:
            last = progress[-1] if progress else None
            check(
                last is not None and last.epoch == 2 and last.batches_per_epoch == 2,
                "in the epoch where max_nr_batches=10 ends the fit, FitProgress.batches_per_epoch must be 2 "
                f"(§12.4.7); the last progress is {last}",
            )


@case(
    "training/12.3.9/state-persists-between-fits",
    rule="The model and optimizer state persist between fits: each fit continues from the current weights "
    "and optimizer state of the identity.",
    needs=TRAIN,
)
async def _case_persist(ctx: Context) -> None:
    conn = await ctx.connect()
    start = initial_weights(6)
    await configure(conn, config(weights=start, batch_size=64, lr=0.5, momentum=0.9))
    await fit(conn)
    await fit(conn)
    got = await get_weights(conn)
    expected, _ = local_fit(start, lr=0.5, batch_size=64, epochs=1, momentum=0.9, fits=2)
    restarted, _ = local_fit(local_fit(start, lr=0.5, batch_size=64, epochs=1, momentum=0.9)[0], lr=0.5,
                             batch_size=64, epochs=1, momentum=0.9)  # fmt: skip
    if close(got, restarted) and not close(got, expected):
        fail("the second fit started with a fresh optimizer (its momentum was lost)")
    check(close(got, expected), "after two fits the weights differ from two SGD-with-momentum steps")


@case(
    "training/12.3.11/return-weights",
    rule="FitReply.weights MUST be non-empty exactly when FitRequest.return_weights is true (all entries, "
    "in order, §12.3.10).",
    needs=TRAIN,
)
async def _case_return_weights(ctx: Context) -> None:
    conn = await ctx.connect()
    await configure(conn, config())
    body, _ = await fit(conn, return_weights=False)
    check(not body.weights, f"return_weights=false still returned {len(body.weights)} weights")
    body, _ = await fit(conn, return_weights=True)
    names = [w.name for w in body.weights]
    check(names == ["weight", "bias"], f"return_weights=true returned {names}")
    same = close(from_named(body.weights), await get_weights(conn))
    check(same, "FitReply.weights differ from get_weights")


_FIT_SHAPES = st.tuples(
    st.sampled_from([1, 5, 8, 13, 32, 64, 100]),  # batch_size
    st.integers(1, 3),  # epochs
    st.integers(0, 6),  # progress_every
    st.integers(-1, 20),  # max_nr_batches
)


@case(
    "training/12.4/progress-events",
    rule="FitProgress events arrive before the fit's terminal reply (§12.4.2), their (epoch, batch) pairs "
    "are strictly increasing (§12.4.3), the last batch of every epoch has one (§12.4.4), every multiple of "
    "progress_every has one (§12.4.5), and no batch has two (§12.4.6).",
    needs=TRAIN,
)
def _case_progress(ctx: Context) -> None:
    check_examples(
        ctx,
        _progress,
        shape=_FIT_SHAPES,
        examples=[{"shape": (8, 2, 3, 0)}, {"shape": (10, 2, 0, 9)}],
        max_examples=max(4, ctx.settings.max_examples // 2),
    )


async def _progress(ctx: Context, shape: tuple[int, int, int, int]) -> None:
    batch_size, epochs, every, cap = shape
    per_epoch = -(-64 // batch_size)
    total = per_epoch * epochs if cap <= 0 else min(cap, per_epoch * epochs)
    async with await ctx.connect() as conn:
        await configure(conn, config(batch_size=batch_size, epochs=epochs, max_nr_batches=cap))
        body, progress = await fit(conn, progress_every=every)
    check(body.batches == total, f"the fit ran {body.batches} batches, expected {total}")
    seen = [(p.epoch, p.batch) for p in progress]
    if any(b <= a for a, b in itertools.pairwise(seen)):
        fail(f"(epoch, batch) of the FitProgress events are not strictly increasing: {seen}")
    runs: dict[int, int] = {}
    for n in range(total):
        epoch = n // per_epoch + 1
        runs[epoch] = runs.get(epoch, 0) + 1
    for epoch, batches in runs.items():
        if (epoch, batches) not in seen:
            fail(f"no FitProgress for the last batch ({batches}) of epoch {epoch}; got {seen} (§12.4.4)")
        if every:
            missing = [b for b in range(every, batches + 1, every) if (epoch, b) not in seen]
            if missing:
                fail(
                    f"progress_every={every}: no FitProgress for batches {missing} of epoch {epoch} (§12.4.5)"
                )
    for p in progress:
        expected_per_epoch = runs.get(p.epoch)
        if expected_per_epoch is None or p.batch > expected_per_epoch:
            fail(f"FitProgress for epoch {p.epoch} batch {p.batch}, which the fit does not run")
        if p.batches_per_epoch != expected_per_epoch:
            fail(
                f"FitProgress of epoch {p.epoch} says batches_per_epoch={p.batches_per_epoch}, "
                f"expected {expected_per_epoch} (§12.4.7)"
            )
        samples = (p.epoch - 1) * 64 + min(p.batch * batch_size, 64)
        if p.samples != samples:
            fail(
                f"FitProgress at epoch {p.epoch} batch {p.batch} says samples={p.samples}, expected {samples}"
            )


@case(
    "training/12.4.9/cancel-fit",
    rule="A Cancel of a fit MUST be honoured between batches: the server completes at most the batch in "
    "progress and then ends the fit with CANCELLED (§12.3.12: the model is not rolled back).",
    needs=TRAIN,
)
async def _case_cancel_fit(ctx: Context) -> None:
    conn = await ctx.connect()
    start = initial_weights(8)
    await configure(conn, config(weights=start, batch_size=1, epochs=2000, lr=0.05))
    rid = await conn.request("fit", training_pb2.FitRequest(dataset_key="conformance", progress_every=1))
    await conn.wait_for(
        lambda: next((f for f in conn.frames_with_id(rid) if f.kind == "fit_progress"), None),
        f"a FitProgress for fit request {rid}",
        timeout=max(ctx.settings.timeout, 30),
    )
    await conn.request("cancel", None, request_id=rid)
    watch = Stopwatch()
    reply = await conn.reply(rid, timeout=max(ctx.settings.timeout, 10))
    reply.expect_error(ErrorCode.ERROR_CODE_CANCELLED)
    check(watch.elapsed < 2.0, f"CANCELLED came {watch.elapsed:.2f} s after the Cancel")
    rolled_back = close(await get_weights(conn), start)
    check(not rolled_back, "after a cancelled fit the weights are back at their start")


@case(
    "training/12.5.6/evaluate-matches",
    rule="When return_loss is true, EvaluateReply.loss MUST be set to the mean loss per sample; correct "
    "MUST be the number of samples whose predicted class equals their target class (§12.5.7); the "
    "histograms count predicted and target classes (§12.5.9), with nr_bins 0 meaning the largest class + 1 "
    "(§12.5.10).",
    needs=TRAIN,
)
async def _case_evaluate(ctx: Context) -> None:
    conn = await ctx.connect()
    weights = initial_weights(9)
    await configure(conn, config(weights=weights, batch_size=16))
    loss, predicted, target = local_eval(weights)
    for batch_size in (0, 7, 64):
        body = await evaluate(conn, **EVERYTHING, nr_bins=0, batch_size=batch_size)
        check(body.total == 64, f"evaluate says total={body.total}, expected 64 (§12.5.5)")
        check(body.HasField("loss"), "evaluate with return_loss=true has no loss")
        mean = f"the mean loss per sample is {loss}"
        check(near(body.loss, loss), f"evaluate (batch_size {batch_size}) says loss={body.loss}, {mean}")
        correct = int((predicted == target).sum())
        check(body.correct == correct, f"evaluate says correct={body.correct}, expected {correct}")
        bins = int(max(predicted.max(), target.max())) + 1
        expected_pred = np.bincount(predicted, minlength=bins).tolist()
        expected_target = np.bincount(target, minlength=bins).tolist()
        check(
            list(body.prediction_histogram) == expected_pred
            and list(body.target_histogram) == expected_target,
            f"histograms are {list(body.prediction_histogram)} and {list(body.target_histogram)}, expected "
            f"{expected_pred} and {expected_target}",
        )
    check(close(await get_weights(conn), weights), "evaluate changed the weights (§12.5.1)")


@case(
    "training/12.5.6/evaluate-omits-unasked",
    rule="When it is false, loss MUST be unset (§12.5.6; and without return_raw_accuracy correct is 0, "
    "§12.5.7; without return_histograms both histograms MUST be empty, §12.5.9).",
    needs=TRAIN,
)
async def _case_evaluate_flags(ctx: Context) -> None:
    conn = await ctx.connect()
    await configure(conn, config(weights=initial_weights(9)))
    body = await evaluate(conn)
    check(not body.HasField("loss"), f"evaluate without return_loss sets loss={body.loss}")
    check(body.correct == 0, f"evaluate without return_raw_accuracy says correct={body.correct}")
    unasked = body.prediction_histogram or body.target_histogram
    check(not unasked, "evaluate sent histograms it was not asked for")
    body = await evaluate(conn, return_histograms=True, nr_bins=2)
    _, predicted, target = local_eval(initial_weights(9))
    want = ([int((predicted == c).sum()) for c in (0, 1)], [int((target == c).sum()) for c in (0, 1)])
    got = (list(body.prediction_histogram), list(body.target_histogram))
    check(got == want, f"with nr_bins=2 the histograms are {got}, expected {want} (class 2 is not counted)")


@case(
    "training/12.5.12/evaluate-kind",
    rule="EvaluateReply.kind MUST be the kind evaluated (the fixture's int64 targets are a classification, "
    "§12.5.11, by default and when asked; a classification leaves mean_squared_error and "
    "mean_absolute_error unset, §12.5.15).",
    needs=TRAIN,
)
async def _case_evaluate_kind(ctx: Context) -> None:
    conn = await ctx.connect()
    await configure(conn, config(weights=initial_weights(9)))
    for asked in (training_pb2.EVALUATE_KIND_UNSPECIFIED, training_pb2.EVALUATE_KIND_CLASSIFICATION):
        body = await evaluate(conn, **EVERYTHING, kind=asked)
        name = training_pb2.EvaluateKind.Name(asked)
        check(
            body.kind == training_pb2.EVALUATE_KIND_CLASSIFICATION,
            f"evaluate of int64 targets with kind {name} answers kind {body.kind}, not "
            f"EVALUATE_KIND_CLASSIFICATION ({training_pb2.EVALUATE_KIND_CLASSIFICATION})",
        )
        errors = [f for f in ("mean_squared_error", "mean_absolute_error") if body.HasField(f)]
        check(not errors, f"a classification (asked as {name}) sets {', '.join(errors)}")


@case(
    "training/12.5.11/evaluate-kind-refused",
    rule="A kind that is not a value of EvaluateKind MUST be answered with INVALID_ARGUMENT (and so MUST a "
    "regression whose output has another element count than its targets, §12.5.13: the registered "
    "model gives 3 values per sample, the fixture 1 target).",
    needs=TRAIN,
)
async def _case_evaluate_kind_refused(ctx: Context) -> None:
    conn = await ctx.connect()
    await configure(conn, config(weights=initial_weights(9)))
    # Any: 99 is deliberately no EvaluateKind (proto3 enums carry unknown numbers)
    kinds: tuple[tuple[Any, str], ...] = (
        (99, "an undefined kind 99"),
        (training_pb2.EVALUATE_KIND_REGRESSION, "a regression"),
    )
    for kind, what in kinds:
        request = training_pb2.EvaluateRequest(dataset_key="conformance", return_raw_accuracy=True, kind=kind)
        refused(await conn.call("evaluate", request), f"evaluate as {what}", INVALID)


@case(
    "training/18.1.3/fixture-values",
    rule="The features of sample i (i = 0..63) are x[i][j] = ((i × 4 + j) mod 11) / 10 − 0.5 for j = "
    "0..3, computed in binary64 and rounded to the nearest binary32 (§18.1.4: y[i] = (i × 7) mod 3), "
    "as seen through evaluate with known weights.",
    needs=TRAIN,
)
async def _case_fixture_values(ctx: Context) -> None:
    conn = await ctx.connect()
    weights = {"weight": np.eye(3, 4, dtype=np.float32) * 3, "bias": np.array([0.01, 0.02, 0.03], np.float32)}
    await configure(conn, config(weights=weights))
    loss, predicted, _ = local_eval(weights)
    body = await evaluate(conn, **EVERYTHING, nr_bins=3)
    targets = list(body.target_histogram)
    check(targets == [22, 21, 21], f"the fixture's targets count {targets}, not [22, 21, 21]")
    check(
        list(body.prediction_histogram) == np.bincount(predicted, minlength=3).tolist()
        and math.isclose(body.loss, loss, rel_tol=1e-5, abs_tol=1e-6),
        "evaluate with one-hot weights does not match the fixture's features",
    )


_F32_BYTES = st.binary(min_size=4 * 15, max_size=4 * 15)


@case(
    "training/12.6.7/weights-roundtrip",
    rule="Weights set with set_weights and then read with get_weights MUST be byte-for-byte equal (§12.6.2: "
    "updated is the number of tensors replaced).",
    needs=TRAIN,
)
def _case_weights_roundtrip(ctx: Context) -> None:
    ctx.run(_configure_once(ctx))
    examples = [{"data": bytes.fromhex("0100c07f") * 15}]
    check_examples(ctx, _weights_roundtrip, data=_F32_BYTES, examples=examples)


async def _configure_once(ctx: Context) -> None:
    async with await ctx.connect() as conn:
        await configure(conn, config())


async def _weights_roundtrip(ctx: Context, data: bytes) -> None:
    async with await ctx.connect() as conn:
        weights = [raw_named("weight", data[:48], [3, 4]), raw_named("bias", data[48:], [3])]
        reply = await conn.expect("set_weights", training_pb2.SetWeightsRequest(weights=weights, strict=True))
        check(reply.updated == 2, f"set_weights of 2 tensors says updated={reply.updated}")
        got = (await conn.expect("get_weights", training_pb2.GetWeightsRequest())).weights
        same = [w.tensor.data for w in got] == [data[:48], data[48:]]
        check(same, "get_weights returns other bytes than set_weights stored")


def _set_weights(
    what: str, tensors: list[tensor_pb2.NamedTensor], *codes: int, strict: bool = False, then: Then = None
) -> Probe:
    """set_weights of ``tensors``: refused with one of ``codes``, or accepted when none are given."""
    request = training_pb2.SetWeightsRequest(weights=tensors, strict=strict)
    return Probe(f"set_weights with {what}", "set_weights", request, codes, ok=not codes, then=then)


def _kept(weights: dict[str, np.ndarray], what: str) -> Then:
    """A check that a refused request left the weights as they were (§12.6.6)."""

    async def then(conn: Connection, _: Reply) -> None:
        check(close(await get_weights(conn), weights), f"a refused {what} changed the weights")

    return then


async def _set_weights_invalid(ctx: Context, conn: Connection) -> list[Probe]:
    weights = await _configured(conn, 10)
    new = named(initial_weights(11))
    bad = [
        ("an unknown name", named({"weights": weights["weight"]})),
        ("a wrong shape", [new[0], *named({"bias": np.zeros(4, np.float32)})]),
        ("a wrong dtype", [new[0], raw_named("bias", bytes(12), [3], tensor_pb2.DTYPE_INT32)]),
        ("an invalid tensor", [new[0], raw_named("bias", b"x", [3])]),
    ]
    return [
        _set_weights(what, tensors, INVALID, then=_kept(weights, f"set_weights with {what}"))
        for what, tensors in bad
    ]


async def _strict(ctx: Context, conn: Connection) -> list[Probe]:
    weights = await _configured(conn, 12)
    only_weight = named({"weight": initial_weights(13)["weight"]})

    async def one_updated(conn: Connection, reply: Reply) -> None:
        updated = reply.envelope.set_weights_reply.updated
        check(updated == 1, f"a non-strict set_weights of one tensor says updated={updated}")

    return [
        _set_weights("weight only", only_weight, INVALID, strict=True, then=_kept(weights, "set_weights")),
        _set_weights("weight only, strict=false", only_weight, then=one_updated),
    ]


async def _duplicate_names(ctx: Context, conn: Connection) -> list[Probe]:
    weights = await _configured(conn, 14)
    w = named(initial_weights(15))
    return [
        _set_weights(what, tensors, INVALID, then=_kept(weights, "set_weights"))
        for what, tensors in (
            ("weight given twice", [w[0], w[1], w[0]]),
            ("an empty name", [w[0], tensor_pb2.NamedTensor(name="", tensor=w[1].tensor)]),
            ("an unset tensor", [w[0], tensor_pb2.NamedTensor(name="bias")]),
        )
    ]


register(
    Row(
        "training/12.6.4/set-weights-invalid",
        rule="A name that is not in the state dict, or a tensor whose shape or dtype differs from the "
        "model's, MUST be answered with INVALID_ARGUMENT (§12.6.6: a set_weights that fails MUST change "
        "nothing).",
        probes=_set_weights_invalid,
    ),
    Row(
        "training/12.6.5/strict-needs-every-entry",
        rule="When strict is true, every entry of the state dict MUST be given; a missing one MUST be "
        "answered with INVALID_ARGUMENT.",
        probes=_strict,
    ),
    Row(
        "training/7.4.3/duplicate-names",
        rule="A list of NamedTensor MUST NOT contain the same name twice; a server MUST reject a request "
        "that does with INVALID_ARGUMENT (§7.4.2: an empty name or an unset tensor too).",
        probes=_duplicate_names,
    ),
    needs=TRAIN,
)


@case(
    "training/12.1.13/state-per-identity",
    rule="Training state (the config, the model with its weights, and the optimizer with its state) belongs "
    "to the identity that set it; it is shared by that identity's connections and invisible to other "
    "identities.",
    needs=TRAIN,
    tokens=2,
)
async def _case_per_identity(ctx: Context) -> None:
    mine = await ctx.connect()
    theirs = await ctx.connect_second()
    a, b = initial_weights(16), initial_weights(17)
    await configure(mine, config(weights=a))
    await configure(theirs, config(weights=b, batch_size=32))
    again = await ctx.connect()
    check(close(await get_weights(again), a), "another connection of the same identity sees other weights")
    check(close(await get_weights(theirs), b), "the second identity sees the first identity's weights")
    body, _ = await fit(again)
    check(body.batches == 8, f"a fit of the first identity ran {body.batches} batches; its config has 8")


# -- model archives in the object store (section 12.9) ------------------------------------------------

MODEL_OBJECT = ("training", "objects", "model-object")
UINT8 = tensor_pb2.DTYPE_UINT8


def _script_archive() -> bytes:
    """The TorchScript archive of a 4-5-3 MLP (torch.jit.save's bytes, §12.2.1)."""
    import torch

    with warnings.catch_warnings():  # newer torch deprecates TorchScript, which is what §12.2 names
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(12)
        module = torch.jit.script(
            torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
        )
        buffer = io.BytesIO()
        torch.jit.save(module, buffer)
    return buffer.getvalue()


async def _stored(ctx: Context, conn: Connection, dtype: int, shape: list[int], data: bytes) -> str:
    """Store an object of the suite's own (inline: the archives here are small); its id."""
    object_id = ctx.unique("model")
    request = objects_pb2.SendObjectRequest(id=object_id, tensor=make_tensor(dtype, shape, data))
    await conn.expect("send_object", request)
    return object_id


def _object_config(object_id: str) -> training_pb2.TrainConfig:
    cfg = config()
    cfg.model_object = object_id  # replaces registered_model: one oneof
    return cfg


@case(
    "training/12.9.2/model-object",
    rule="TrainConfig.model_object is the id of an object in the calling identity's store whose tensor is "
    "1-D with dtype uint8 and whose bytes are a TorchScript archive; the server treats those bytes as it "
    "treats a model_torchscript (§12.1.1), and MUST NOT change or delete the object (§12.9.5).",
    needs=MODEL_OBJECT,
)
async def _case_model_object(ctx: Context) -> None:
    conn = await ctx.connect()
    if await _weights_only(conn):
        skip("the server is weights-only (§12.2.4)")
    archive = _script_archive()
    object_id = await _stored(ctx, conn, UINT8, [len(archive)], archive)
    reply = await configure(conn, _object_config(object_id))
    count = reply.parameter_count
    check(count == 4 * 5 + 5 + 5 * 3 + 3, f"parameter_count is {count}, expected 43")
    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    check(list(reply.state_names) == names, f"state_names are {list(reply.state_names)}, expected {names}")
    inline = config()
    inline.model_torchscript = archive
    by_object = await get_weights(conn)
    await configure(conn, inline)
    by_bytes = await get_weights(conn)
    same = list(by_object) == list(by_bytes)
    same = same and all(np.array_equal(by_object[name], by_bytes[name]) for name in by_bytes)
    check(
        same,
        "the model built from the object has other weights than the one built from the same archive inline",
    )
    got = await conn.expect("get_object", objects_pb2.GetObjectRequest(id=object_id))
    check(
        got.tensor.data == archive or got.info.tensor.sha256 == hashlib.sha256(archive).digest(),
        "after set_train_config the object no longer holds the archive that was stored (§12.9.5)",
    )
    await conn.expect("delete_object", objects_pb2.DeleteObjectRequest(id=object_id))


async def _bad_model_objects(ctx: Context, conn: Connection) -> list[Probe]:
    if await _weights_only(conn):
        skip("the server is weights-only: it refuses every model_object (§12.9.3)")
    archive = _script_archive()
    # the archive itself under another dtype or shape: only the tensor's type makes it wrong
    signed = await _stored(ctx, conn, tensor_pb2.DTYPE_INT8, [len(archive)], archive)
    row = await _stored(ctx, conn, UINT8, [1, len(archive)], archive)
    floats = await _stored(ctx, conn, FLOAT32, [4], bytes(16))
    scalar = await _stored(ctx, conn, UINT8, [], b"P")
    junk = await _stored(ctx, conn, UINT8, [44], b"PK\x03\x04" + bytes(40))
    missing = ctx.unique("missing")
    return [
        _set_config(f"model_object {missing!r}, which names no object", _object_config(missing), NOT_FOUND),
        _set_config("an empty model_object", _object_config(""), INVALID),
        _set_config("a model_object of 257 bytes", _object_config("m" * 257), INVALID),
        _set_config("a model_object holding the archive as an int8 tensor", _object_config(signed), INVALID),
        _set_config("a model_object holding the archive in a [1, n] uint8", _object_config(row), INVALID),
        _set_config("a model_object holding a float32 tensor", _object_config(floats), INVALID),
        _set_config("a model_object holding a 0-D uint8 tensor", _object_config(scalar), INVALID),
        _set_config("a model_object of junk bytes (§12.9.2)", _object_config(junk), INVALID),
    ]


async def _weights_only_refuses_objects(ctx: Context, conn: Connection) -> list[Probe]:
    if not await _weights_only(conn):
        skip("the server is not weights-only")
    archive = _script_archive()
    stored = await _stored(ctx, conn, UINT8, [len(archive)], archive)
    return [
        _set_config("a model_object holding an archive", _object_config(stored), DENIED),
        _set_config("a model_object that names no object", _object_config(ctx.unique("missing")), DENIED),
    ]


register(
    Row(
        "training/12.9.4/model-object-errors",
        rule="A model_object that breaks §9.9.1 (empty, or longer than 256 bytes) MUST be answered with "
        "INVALID_ARGUMENT; one that names no "
        "object of the calling identity MUST be answered with NOT_FOUND; an object whose tensor is not 1-D "
        "or whose dtype is not uint8 MUST be answered with INVALID_ARGUMENT (bytes that fail to load too, "
        "§12.9.2).",
        probes=_bad_model_objects,
    ),
    Row(
        "training/12.9.3/weights-only-refuses-model-object",
        rule="A weights-only server MUST answer a TrainConfig with model_object with PERMISSION_DENIED, "
        "whether the object exists or not (§12.9.2, §12.9.3).",
        probes=_weights_only_refuses_objects,
    ),
    needs=MODEL_OBJECT,
)


# -- chunked weights (section 12.8) --------------------------------------------------------------------

CHUNKED_WEIGHTS = ("training", "chunked-weights")
_EMPTY_SHA256 = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def _manifest_problem(manifest: training_pb2.WeightsManifest) -> str | None:
    """What breaks §12.8.3 in ``manifest``, or None."""
    names: set[str] = set()
    offset = 0
    for entry in manifest.entries:
        if not entry.name or entry.name in names:
            return f"entry name {entry.name!r} is empty or repeated"
        names.add(entry.name)
        width = DTYPE_WIDTHS.get(entry.dtype)
        if width is None or any(d < 0 for d in entry.shape):
            return f"entry {entry.name!r} has dtype {entry.dtype} and shape {list(entry.shape)}"
        if entry.nbytes != math.prod(entry.shape) * width:
            return f"entry {entry.name!r} says nbytes={entry.nbytes} for shape {list(entry.shape)}"
        if entry.offset != offset:
            return f"entry {entry.name!r} starts at byte {entry.offset}, not {offset}"
        offset += entry.nbytes
    if manifest.total_bytes != offset:
        return f"total_bytes={manifest.total_bytes}, but the entries add up to {offset}"
    return None


@case(
    "training/12.8.5/chunked-get-weights",
    rule="A client asks for the chunked form with GetWeightsRequest.chunked set. A server that advertises "
    "chunked-weights MUST then answer with one weights_manifest of every state-dict entry in order, then "
    "the payload as chunks, then a GetWeightsReply with no weights and the payload's digest (§12.8.3, "
    "§12.8.4, §12.8.7).",
    needs=CHUNKED_WEIGHTS,
)
async def _case_chunked_get_weights(ctx: Context) -> None:
    conn = await ctx.connect()
    weights = await _configured(conn, 9)
    reply = await conn.call("get_weights", training_pb2.GetWeightsRequest(chunked=True))
    body = reply.expect("get_weights_reply")
    kinds = [event.WhichOneof("body") for event in reply.events]
    check(
        kinds[:1] == ["weights_manifest"], f"the answer began with {kinds[:1] or 'the reply'}, not a manifest"
    )
    check(set(kinds[1:]) <= {"chunk"}, f"after the manifest came {kinds[1:]}, not only chunks")
    check(not body.weights, f"the chunked GetWeightsReply carries {len(body.weights)} inline weights")
    manifest = reply.events[0].weights_manifest
    problem = _manifest_problem(manifest)
    check(problem is None, f"the manifest breaks §12.8.3: {problem}")
    check(not manifest.sha256 and not manifest.digest, "the download's manifest carries a digest (§12.8.7)")
    names = [entry.name for entry in manifest.entries]
    check(names == ["weight", "bias"], f"the manifest lists {names}, not the state dict's entries in order")
    payload = bytearray()
    for event in reply.events[1:]:
        chunk = event.chunk
        check(chunk.offset == len(payload), f"a chunk at offset {chunk.offset}, expected {len(payload)}")
        check(chunk.total_bytes == manifest.total_bytes, f"a chunk says total_bytes={chunk.total_bytes}")
        payload += chunk.data
    check(
        len(payload) == manifest.total_bytes,
        f"the chunks carried {len(payload)} of {manifest.total_bytes} bytes",
    )
    check(
        body.sha256 == hashlib.sha256(payload).digest(),
        "the GetWeightsReply's sha256 is not the SHA-256 of the payload the chunks carried (§12.8.4)",
    )
    got = {
        entry.name: np.frombuffer(bytes(payload[entry.offset : entry.offset + entry.nbytes]), dtype="<f4")
        for entry in manifest.entries
    }
    check(
        all(np.array_equal(got[name], array.reshape(-1)) for name, array in weights.items()),
        "the payload's tensors are not the weights the train config set",
    )


@case(
    "training/12.8.11/chunked-set-weights",
    rule="A client uploads weights in chunks with a SetWeightsRequest whose chunked holds the manifest and "
    "whose weights is empty, followed by the payload as chunks; the server loads them (§12.8.14), and "
    "refuses a manifest that does not fit the model with INVALID_ARGUMENT before any chunk (§12.8.13).",
    needs=CHUNKED_WEIGHTS,
)
async def _case_chunked_set_weights(ctx: Context) -> None:
    conn = await ctx.connect()
    await _configured(conn, 10)
    new = initial_weights(11)
    payload = b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in new.values())
    entries, offset = [], 0
    for name, array in new.items():
        nbytes = array.size * 4
        entries.append(
            training_pb2.WeightsEntry(
                name=name, dtype=FLOAT32, shape=list(array.shape), offset=offset, nbytes=nbytes
            )
        )
        offset += nbytes
    manifest = training_pb2.WeightsManifest(
        entries=entries, total_bytes=len(payload), sha256=hashlib.sha256(payload).digest()
    )
    rid = await conn.request("set_weights", training_pb2.SetWeightsRequest(strict=True, chunked=manifest))
    size = ctx.welcome.limits.chunk_bytes  # every chunk but the last is this long (§7.3.5)
    for start in range(0, len(payload), size):
        chunk = tensor_pb2.Chunk(offset=start, data=payload[start : start + size], total_bytes=len(payload))
        await conn.request("chunk", chunk, request_id=rid)
    body = (await conn.reply(rid)).expect("set_weights_reply")
    check(body.updated == 2, f"SetWeightsReply.updated is {body.updated}, not 2")
    check(close(await get_weights(conn), new), "get_weights after a chunked set_weights differs from it")
    wrong = training_pb2.WeightsManifest(
        entries=[training_pb2.WeightsEntry(name="nope", dtype=FLOAT32, shape=[2], offset=0, nbytes=8)],
        total_bytes=8,
        sha256=_EMPTY_SHA256,
    )
    reply = await conn.call("set_weights", training_pb2.SetWeightsRequest(chunked=wrong))
    reply.expect_error(ErrorCode.ERROR_CODE_INVALID_ARGUMENT)
