"""The object store as a state machine, checked against a model that is right by construction.

The model of section 9 is an insertion-ordered map from id to (tags, description, tensor). Every rule
sends one request over one connection (kept for the whole run), predicts the answer from the model, and
after every step an invariant compares ``list_objects`` with the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fedproto_pb.v1 import objects_pb2, tensor_pb2
from fedproto_pb.v1.errors_pb2 import ErrorCode

from .checks import check, fail
from .spec import dtype_name, sha256
from .strategies import invalid_tensors, tensors

if TYPE_CHECKING:
    from .context import Context
    from .wire import Connection

__all__ = ["StoredModel", "store_machine"]


@dataclass(frozen=True, slots=True)
class StoredModel:
    """What the model remembers of one object."""

    tags: tuple[str, ...]
    description: str
    tensor: tensor_pb2.Tensor


def _describe(tensor: tensor_pb2.Tensor) -> str:
    return f"Tensor({dtype_name(tensor.dtype)}, shape={list(tensor.shape)}, {len(tensor.data)} bytes)"


def store_machine(ctx: Context) -> type[RuleBasedStateMachine]:
    """A state machine class bound to ``ctx`` (its server, its loop)."""
    from .cases._common import clear_store, download, send_tensor

    prefix = ctx.unique("sm")
    ids = st.sampled_from([f"{prefix}-{n}" for n in range(4)])
    tag_lists = st.lists(st.sampled_from(["a", "b", "C"]), max_size=3, unique=True)
    chunk_bytes = ctx.limits.chunk_bytes

    class ObjectStoreMachine(RuleBasedStateMachine):
        """Drives one identity's store over one connection."""

        def __init__(self) -> None:
            super().__init__()
            self.conn: Connection = ctx.run(ctx.connect())
            ctx.run(clear_store(self.conn))
            self.model: dict[str, StoredModel] = {}

        def teardown(self) -> None:
            ctx.run(self.conn.close())

        @rule(
            object_id=ids,
            tensor=tensors(8),
            tags=tag_lists,
            description=st.text(max_size=5),
            overwrite=st.booleans(),
        )
        def send(
            self,
            object_id: str,
            tensor: tensor_pb2.Tensor,
            tags: list[str],
            description: str,
            overwrite: bool,
        ) -> None:
            note(f"send_object(id={object_id!r}, {_describe(tensor)}, tags={tags}, overwrite={overwrite})")
            reply = ctx.run(
                send_tensor(
                    self.conn, object_id, tensor, tags=tags, description=description, overwrite=overwrite
                )
            )
            if object_id in self.model and not overwrite:
                reply.expect_error(ErrorCode.ERROR_CODE_ALREADY_EXISTS)
                return
            info = reply.expect("send_object_reply").info
            check(info.id == object_id, f"send_object stored id {info.id!r} for {object_id!r}")
            check(info.tensor.sha256 == sha256(tensor.data), "SendObjectReply's sha256 is not the data's")
            self.model[object_id] = StoredModel(tuple(tags), description, tensor)

        @rule(tensor=tensors(4))
        def send_without_id(self, tensor: tensor_pb2.Tensor) -> None:
            note(f"send_object(id='', {_describe(tensor)})")
            info = ctx.run(send_tensor(self.conn, "", tensor)).expect("send_object_reply").info
            check(
                info.id and info.id not in self.model, f"the chosen id {info.id!r} is empty or already used"
            )
            self.model[info.id] = StoredModel((), "", tensor)

        @rule(object_id=ids, bad=invalid_tensors(), overwrite=st.booleans())
        def send_invalid(self, object_id: str, bad: tuple[tensor_pb2.Tensor, str], overwrite: bool) -> None:
            tensor, why = bad
            note(f"send_object(id={object_id!r}, invalid tensor: {why}, overwrite={overwrite})")
            reply = ctx.run(send_tensor(self.conn, object_id, tensor, overwrite=overwrite))
            allowed = {ErrorCode.ERROR_CODE_INVALID_ARGUMENT, ErrorCode.ERROR_CODE_ALREADY_EXISTS}
            error = reply.error
            if error is None or error.code not in allowed:
                fail(
                    f"send_object of a tensor with {why} answered {reply.describe()}, expected "
                    "INVALID_ARGUMENT"
                )

        @rule(object_id=ids)
        def get(self, object_id: str) -> None:
            note(f"get_object(id={object_id!r})")
            if object_id not in self.model:
                reply = ctx.run(self.conn.call("get_object", objects_pb2.GetObjectRequest(id=object_id)))
                reply.expect_error(ErrorCode.ERROR_CODE_NOT_FOUND)
                return
            got = ctx.run(download(self.conn, object_id, chunk_bytes=chunk_bytes))
            want = self.model[object_id].tensor
            check(
                got.data == want.data and got.dtype == want.dtype and got.shape == list(want.shape),
                f"get_object({object_id!r}) returned {got.dtype} {got.shape} {len(got.data)} bytes, "
                f"the model holds {_describe(want)}",
            )

        @rule(object_id=ids)
        def delete(self, object_id: str) -> None:
            note(f"delete_object(id={object_id!r})")
            reply = ctx.run(self.conn.call("delete_object", objects_pb2.DeleteObjectRequest(id=object_id)))
            if object_id not in self.model:
                reply.expect_error(ErrorCode.ERROR_CODE_NOT_FOUND)
                return
            freed = reply.expect("delete_object_reply").freed_bytes
            nbytes = len(self.model.pop(object_id).tensor.data)
            check(
                freed == nbytes, f"delete_object({object_id!r}) freed {freed} bytes, the tensor had {nbytes}"
            )

        @rule()
        def count(self) -> None:
            note("count_objects()")
            count = ctx.run(self.conn.expect("count_objects", objects_pb2.CountObjectsRequest())).count
            check(count == len(self.model), f"count_objects says {count}, the model holds {len(self.model)}")

        @rule()
        def clear(self) -> None:
            note("clear_objects()")
            removed = ctx.run(self.conn.expect("clear_objects", objects_pb2.ClearObjectsRequest())).removed
            check(
                removed == len(self.model),
                f"clear_objects removed {removed}, the model held {len(self.model)}",
            )
            self.model.clear()

        @rule(tags=tag_lists)
        def search(self, tags: list[str]) -> None:
            note(f"search_objects(tags={tags})")
            reply = ctx.run(self.conn.expect("search_objects", objects_pb2.SearchObjectsRequest(tags=tags)))
            got = [o.id for o in reply.objects]
            expected = [oid for oid, obj in self.model.items() if set(tags) <= set(obj.tags)]
            check(got == expected, f"search_objects(tags={tags}) gives {got}, the model says {expected}")

        @invariant()
        def listing_matches_model(self) -> None:
            reply = ctx.run(self.conn.expect("list_objects", objects_pb2.ListObjectsRequest()))
            got = [o.id for o in reply.objects]
            expected = list(self.model)
            if got != expected:
                fail(f"list_objects gives {got}, the model (in insertion order) holds {expected}")
            for info in reply.objects:
                obj = self.model[info.id]
                want = obj.tensor
                if (
                    tuple(info.tags) != obj.tags
                    or info.description != obj.description
                    or info.tensor.dtype != want.dtype
                    or list(info.tensor.shape) != list(want.shape)
                    or info.tensor.nbytes != len(want.data)
                ):
                    fail(
                        f"list_objects describes {info.id!r} as tags={list(info.tags)} description="
                        f"{info.description!r} dtype={info.tensor.dtype} shape={list(info.tensor.shape)} "
                        f"nbytes={info.tensor.nbytes}; the model holds tags={list(obj.tags)} "
                        f"description={obj.description!r} {_describe(want)}"
                    )

    return ObjectStoreMachine
