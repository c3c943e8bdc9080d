"""The body kinds the sessions sort envelopes by."""

from __future__ import annotations

from fedproto.session import (
    REPLY_KIND,
)
from fedproto_pb.v1 import envelope_pb2


def test_reply_table_covers_every_request_body() -> None:
    fields = {f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert set(REPLY_KIND) | set(REPLY_KIND.values()) <= fields
