"""The encoding of the Redis broker's script calls (uipd.cluster.scripts), without Redis: the
KEYS/ARGV layout PUBLISH_SCRIPT reads, and the channel message every node decodes."""

from __future__ import annotations

import orjson

from uipd.cluster.outbox import Pending
from uipd.cluster.scripts import Keys, decode_message, publish_call, publish_outcome
from uipd.core import publish


def test_a_batch_names_each_key_once_and_its_body_decodes_back() -> None:
    keys = Keys("p")
    alert = Pending("n:1", publish.alert("accidents", {"msg": "fire"}), "2026-01-01T00:00:00.000Z", "feed", "tok")
    update = Pending("n:2", publish.update("accidents", [{"id": "a", "v": 1}], ["b"]), "2026-01-01T00:00:00.001Z", "")
    script_keys, args = publish_call(keys, 1000, [alert, update])
    assert script_keys == ["p:seq", "p:messages", "p:alert-floor", "p:state:accidents", "p:alerts:accidents", "p:lease:feed"]
    # per publication: topic, kind, body, state index, ALERT record index, lease index, token, n upserts, ..., n removed, ...
    assert args[:2] == [2, 1000]
    assert args[2:4] + args[5:10] == ["accidents", "ALERT", 4, 5, 6, "tok", 0] and args[10] == 0
    assert args[11:13] + args[14:19] == ["accidents", "UPDATE", 4, 0, 0, "", 1] and args[19:] == ["a", orjson.dumps({"id": "a", "v": 1}), 1, "b"]
    seq, header, data_json = decode_message(b"7 " + args[4])
    assert seq == 7 and header["id"] == "n:1" and header["k"] == "ALERT" and header["ts"] == alert.ts
    assert orjson.loads(data_json) == {"msg": "fire"}
    assert decode_message(b"0 " + args[13])[0] is None  # seq 0: no topic's seq


def test_a_reply_is_a_seq_or_the_error() -> None:
    assert publish_outcome(5) == 5 and publish_outcome(b"LEASE_LOST") == "LEASE_LOST" and publish_outcome("ERR x") == "ERR x"
