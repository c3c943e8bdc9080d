"""The object store on its own: per-identity scoping, quota accounting, order, search, atomicity."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedproto.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from fedproto.server.store import MAX_ID_BYTES, ObjectStore
from fedproto.types import TensorInfo


def info(nbytes: int, dtype: torch.dtype = torch.uint8) -> TensorInfo:
    width = torch.empty((), dtype=dtype).element_size()
    return TensorInfo(dtype=dtype, shape=(nbytes // width,), nbytes=nbytes)


def put(
    store: ObjectStore,
    object_id: str,
    nbytes: int,
    *,
    identity: str = "alice",
    tags: tuple[str, ...] = (),
    overwrite: bool = False,
    fill: int = 0,
) -> str:
    stored = store.put(
        identity,
        object_id=object_id,
        tags=tags,
        description=f"{object_id} of {nbytes}",
        tensor=info(nbytes),
        payload=bytes([fill]) * nbytes,
        overwrite=overwrite,
    )
    return stored.id


def snapshot(store: ObjectStore, identity: str = "alice") -> tuple[object, ...]:
    return (
        store.list(identity),
        store.count(identity),
        store.bytes_used(identity),
        [bytes(store.get(identity, o.id).payload) for o in store.list(identity)],
    )


def test_put_get_and_metadata() -> None:
    store = ObjectStore()
    payload = torch.arange(6, dtype=torch.int16).numpy().tobytes()
    stored = store.put(
        "alice",
        object_id="x",
        tags=["b", "a", "b"],
        description="six",
        tensor=TensorInfo(dtype=torch.int16, shape=(2, 3), nbytes=12),
        payload=payload,
    )
    assert stored.id == "x"
    assert stored.tags == ("b", "a", "b")  # in the order given
    assert stored.description == "six"
    assert stored.tensor.sha256 == hashlib.sha256(payload).digest()
    assert stored.nbytes == 12
    got = store.get("alice", "x")
    assert got.info == stored
    assert bytes(got.payload) == payload
    assert torch.equal(got.tensor(), torch.arange(6, dtype=torch.int16).reshape(2, 3))
    assert store.bytes_used("alice") == 12


def test_get_and_delete_unknown() -> None:
    store = ObjectStore()
    with pytest.raises(NotFoundError):
        store.get("alice", "x")
    with pytest.raises(NotFoundError):
        store.delete("alice", "x")
    put(store, "x", 4)
    assert store.delete("alice", "x") == 4
    with pytest.raises(NotFoundError):
        store.get("alice", "x")
    assert store.bytes_used("alice") == 0


def test_quota_accounting_with_overwrite() -> None:
    store = ObjectStore(max_bytes_per_identity=100)
    put(store, "a", 60)
    put(store, "b", 40)  # exactly at the quota
    assert store.bytes_used("alice") == 100
    with pytest.raises(ResourceExhaustedError) as exc:
        put(store, "c", 1)
    assert exc.value.details["limit"] == "100"
    # overwriting counts the replaced object's bytes as freed
    put(store, "a", 60, overwrite=True, fill=1)
    with pytest.raises(ResourceExhaustedError):
        put(store, "a", 61, overwrite=True)
    put(store, "a", 10, overwrite=True)
    assert store.bytes_used("alice") == 50
    put(store, "c", 50)
    assert store.bytes_used("alice") == 100
    assert store.delete("alice", "b") == 40
    assert store.bytes_used("alice") == 60
    assert store.clear("alice") == 2
    assert store.bytes_used("alice") == 0
    put(store, "d", 100)


def test_a_quota_error_says_what_is_used_what_is_asked_and_the_limit() -> None:
    store = ObjectStore(max_bytes_per_identity=100)
    put(store, "a", 60)
    put(store, "b", 30)
    with pytest.raises(ResourceExhaustedError) as exc:
        put(store, "c", 20)
    assert exc.value.message == (
        "storing 20 bytes would exceed this identity's quota: 90 of 100 bytes are used by 2 objects; "
        "delete some or store less"
    )
    assert exc.value.details == {"limit": "100", "used": "90", "requested": "20", "objects": "2"}
    with pytest.raises(ResourceExhaustedError) as exc:
        put(store, "a", 71, overwrite=True)
    assert "(60 of them freed by the overwrite)" in exc.value.message


def test_quota_is_per_identity_and_zero_means_unlimited() -> None:
    store = ObjectStore(max_bytes_per_identity=10)
    put(store, "x", 10, identity="alice")
    put(store, "x", 10, identity="bob")
    with pytest.raises(ResourceExhaustedError):
        put(store, "y", 1, identity="bob")
    unlimited = ObjectStore(max_bytes_per_identity=0)
    put(unlimited, "big", 10_000_000)
    assert unlimited.bytes_used("alice") == 10_000_000


def test_check_room() -> None:
    store = ObjectStore(max_bytes_per_identity=10)
    put(store, "x", 8)
    store.check_room("alice", "y", 2, overwrite=False)
    store.check_room("alice", "x", 10, overwrite=True)
    store.check_room("alice", "", 2, overwrite=False)
    with pytest.raises(ResourceExhaustedError):
        store.check_room("alice", "y", 3, overwrite=False)
    with pytest.raises(AlreadyExistsError):
        store.check_room("alice", "x", 1, overwrite=False)
    with pytest.raises(InvalidArgumentError):
        store.check_room("alice", "x" * (MAX_ID_BYTES + 1), 1, overwrite=False)


def test_failed_puts_leave_the_store_unchanged() -> None:
    store = ObjectStore(max_bytes_per_identity=100)
    put(store, "a", 30, tags=("t",))
    put(store, "b", 30)
    before = snapshot(store)
    with pytest.raises(AlreadyExistsError):
        put(store, "a", 10, fill=9)
    with pytest.raises(ResourceExhaustedError):
        put(store, "c", 41)
    with pytest.raises(ResourceExhaustedError):
        put(store, "a", 71, overwrite=True, fill=9)
    with pytest.raises(InvalidArgumentError):
        put(store, "x" * (MAX_ID_BYTES + 1), 1)
    with pytest.raises(InvalidArgumentError):
        put(store, "é" * 129, 1)  # 258 bytes of UTF-8
    assert snapshot(store) == before


def test_id_length_is_counted_in_utf8_bytes() -> None:
    store = ObjectStore()
    assert put(store, "é" * 128, 1) == "é" * 128  # 256 bytes
    assert put(store, "x" * MAX_ID_BYTES, 1) == "x" * MAX_ID_BYTES


def test_fresh_ids_are_unique_and_never_clash() -> None:
    store = ObjectStore()
    put(store, "obj-1", 1)
    put(store, "obj-2", 1)
    fresh = [put(store, "", 1) for _ in range(5)]
    assert len(set(fresh)) == 5
    assert not {"obj-1", "obj-2"} & set(fresh)
    assert store.count("alice") == 7


def test_order_is_insertion_order() -> None:
    store = ObjectStore()
    for object_id in ["z", "a", "m", "b"]:
        put(store, object_id, 1)
    put(store, "a", 2, overwrite=True)  # keeps its place
    store.delete("alice", "z")
    put(store, "z", 1)  # deleted and sent again: new, so last
    assert [o.id for o in store.list("alice")] == ["a", "m", "b", "z"]
    assert store.list("alice")[0].nbytes == 2


def test_search_semantics() -> None:
    store = ObjectStore()
    put(store, "ab", 1, tags=("a", "b"))
    put(store, "a", 1, tags=("a",))
    put(store, "none", 1)
    put(store, "ba", 1, tags=("b", "a", "c"))
    put(store, "A", 1, tags=("A",))
    assert [o.id for o in store.search("alice", [])] == ["ab", "a", "none", "ba", "A"]
    assert [o.id for o in store.search("alice", ["a"])] == ["ab", "a", "ba"]
    assert [o.id for o in store.search("alice", ["b", "a"])] == ["ab", "ba"]
    assert [o.id for o in store.search("alice", ["a", "a"])] == ["ab", "a", "ba"]
    assert [o.id for o in store.search("alice", ["A"])] == ["A"]
    assert store.search("alice", ["a", "z"]) == []
    assert store.search("alice", ["a "]) == []
    assert store.search("bob", []) == []


def test_clear_only_touches_one_identity() -> None:
    store = ObjectStore()
    put(store, "x", 3, identity="alice")
    put(store, "y", 3, identity="alice")
    put(store, "x", 5, identity="bob")
    assert store.clear("alice") == 2
    assert store.count("alice") == 0
    assert store.bytes_used("alice") == 0
    assert store.clear("alice") == 0
    assert [o.id for o in store.list("bob")] == ["x"]
    assert store.bytes_used("bob") == 5


def test_identities_are_isolated() -> None:
    store = ObjectStore()
    put(store, "x", 3, identity="alice", fill=1)
    with pytest.raises(NotFoundError):
        store.get("bob", "x")
    with pytest.raises(NotFoundError):
        store.delete("bob", "x")
    put(store, "x", 4, identity="bob", fill=2)  # the same id, no clash
    assert bytes(store.get("alice", "x").payload) == b"\x01" * 3
    assert bytes(store.get("bob", "x").payload) == b"\x02" * 4
    assert store.count("bob") == 1 and store.search("bob", []) == store.list("bob")


# -- a model-based check of the accounting -----------------------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "put-overwrite", "delete", "clear"]),
        st.sampled_from(["alice", "bob"]),
        st.sampled_from(["a", "b", "c"]),
        st.integers(min_value=0, max_value=40),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(operations)
def test_store_matches_a_simple_model(ops: list[tuple[str, str, str, int]]) -> None:
    limit = 64
    store = ObjectStore(max_bytes_per_identity=limit)
    model: dict[str, dict[str, int]] = {"alice": {}, "bob": {}}
    for action, identity, object_id, nbytes in ops:
        objects = model[identity]
        if action.startswith("put"):
            overwrite = action == "put-overwrite"
            freed = objects.get(object_id, 0) if overwrite else 0
            if object_id in objects and not overwrite:
                with pytest.raises(AlreadyExistsError):
                    put(store, object_id, nbytes, identity=identity, overwrite=overwrite)
            elif sum(objects.values()) - freed + nbytes > limit:
                with pytest.raises(ResourceExhaustedError):
                    put(store, object_id, nbytes, identity=identity, overwrite=overwrite)
            else:
                put(store, object_id, nbytes, identity=identity, overwrite=overwrite)
                objects[object_id] = nbytes  # dicts keep the first insertion's place too
        elif action == "delete":
            if object_id in objects:
                assert store.delete(identity, object_id) == objects.pop(object_id)
            else:
                with pytest.raises(NotFoundError):
                    store.delete(identity, object_id)
        else:
            assert store.clear(identity) == len(objects)
            objects.clear()
        for who, expected in model.items():
            assert [(o.id, o.nbytes) for o in store.list(who)] == list(expected.items())
            assert store.bytes_used(who) == sum(expected.values())
            assert store.count(who) == len(expected)


def test_digests_follow_the_connection_algorithm_and_are_computed_once() -> None:
    from fedproto import hashing

    store = ObjectStore()
    payload = bytes(range(200))
    xxh = hashing.digest(hashing.XXH3_128, payload)
    stored = store.put(
        "alice",
        object_id="x",
        tags=(),
        description="",
        tensor=TensorInfo(dtype=torch.uint8, shape=(200,), nbytes=200, digest=xxh),
        payload=bytearray(payload),
        algorithm=hashing.XXH3_128,
    )
    assert (stored.tensor.sha256, stored.tensor.digest) == (b"", xxh)  # the verified one, kept
    obj = store.get("alice", "x")
    # a listing under another algorithm does not hash the store (section 9.5.3) ...
    assert store.list("alice", hashing.SHA256)[0].tensor.sha256 == b""
    # ... a download does, once, and keeps it
    sha = hashlib.sha256(payload).digest()
    assert obj.described(hashing.SHA256).tensor.sha256 == sha
    assert obj.described(hashing.SHA256).tensor.digest == b""
    assert obj.digests == {hashing.XXH3_128: xxh, hashing.SHA256: sha}
    assert store.list("alice", hashing.SHA256)[0].tensor.sha256 == sha
    assert store.search("alice", (), hashing.XXH3_128)[0].tensor.digest == xxh
