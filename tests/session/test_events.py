"""The values the sessions hand out: small, frozen, slotted dataclasses."""

from __future__ import annotations

import dataclasses

import pytest

from fedproto.session import events


@pytest.mark.parametrize("name", [n for n in events.__all__ if dataclasses.is_dataclass(getattr(events, n))])
def test_events_are_frozen_and_slotted(name: str) -> None:
    cls = getattr(events, name)
    params = cls.__dataclass_params__
    assert params.frozen and "__slots__" in vars(cls)


def test_event_union_lists_every_event() -> None:
    classes = {getattr(events, n) for n in events.__all__ if dataclasses.is_dataclass(getattr(events, n))}
    assert set(events.Event.__args__) == classes


def test_events_compare_by_value() -> None:
    assert events.RequestCancelled(3) == events.RequestCancelled(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        events.SendFrame(b"x").data = b"y"
