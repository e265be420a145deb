"""The encoding of the Redis broker's script calls (uipd.cluster.scripts), without Redis: the
KEYS/ARGV layout PUBLISH_SCRIPT reads, and the channel message every node decodes."""

from __future__ import annotations

import orjson

from uipd.cluster.outbox import Pending
from uipd.cluster.scripts import HistoryRange, Keys, decode_message, publish_call, publish_outcome, read_call
from uipd.core import publish


def test_a_batch_names_each_key_once_and_its_body_decodes_back() -> None:
    keys = Keys("p")
    alert = Pending("n:1", publish.alert("accidents", {"msg": "fire"}), "2026-01-01T00:00:00.000Z", "feed", "tok")
    update = Pending("n:2", publish.update("accidents", [{"id": "a", "v": 1}], ["b"]), "2026-01-01T00:00:00.001Z", "")
    script_keys, args = publish_call(keys, 1000, 50, "EPOCHxyz1234", [alert, update])
    assert script_keys == [
        "p:seq", "p:alert-floor", "p:epoch", "p:messages", "p:state:accidents", "p:alerts:accidents", "p:history:accidents", "p:lease:feed"
    ]
    # per publication: topic, kind, body, state, ALERT record and stream indexes, lease index, token, n upserts, ..., n removed, ...
    assert args[:4] == [2, 1000, 50, "EPOCHxyz1234"]
    assert args[4:6] + args[7:13] == ["accidents", "ALERT", 5, 6, 7, 8, "tok", 0] and args[13] == 0
    assert args[14:16] + args[17:23] == ["accidents", "UPDATE", 5, 6, 7, 0, "", 1] and args[23:] == ["a", orjson.dumps({"id": "a", "v": 1}), 1, "b"]
    seq, epoch, header, data_json = decode_message(b"7 EPOCHxyz1234 " + args[6])
    assert seq == 7 and epoch == "EPOCHxyz1234" and header["id"] == "n:1" and header["k"] == "ALERT" and header["ts"] == alert.ts
    assert orjson.loads(data_json) == {"msg": "fire"}
    assert decode_message(b"0 - " + args[16])[:2] == (None, None)  # seq 0: no topic's seq, no epoch


def test_a_reply_is_a_seq_or_the_error() -> None:
    assert publish_outcome(5) == 5 and publish_outcome(b"LEASE_LOST") == "LEASE_LOST" and publish_outcome("ERR x") == "ERR x"


def test_a_history_read_names_each_stream_once() -> None:
    keys, args = read_call(Keys("p"), 300.0, [HistoryRange("a", 3, 9, "E1"), HistoryRange("b", 1, 2, "E2"), HistoryRange("a", 4, 5, "E3")])
    assert keys == ["p:seq", "p:alert-floor", "p:epoch", "p:history:a", "p:history:b"]
    assert args == [300000, "a", 4, 3, 9, "E1", "b", 5, 1, 2, "E2", "a", 4, 4, 5, "E3"]
