"""PROTOCOL.md sections 2-4 over real sockets: subscriptions, routing, state, seq, aliases."""

from tests.conftest import DEFAULT_TOPICS, api_client, connect


async def publish(daemon, body, path="/api/publish"):
    async with api_client(daemon) as http:
        r = await http.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_subscribe_replaces_default_then_adds_and_unsubscribe_removes(daemon):
    c = await connect(daemon)
    await c.send_json({"action": "subscribe", "topics": ["weather"]})
    assert (await c.recv_json()) | {"timestamp": None} == {"type": "SUBSCRIBED", "topics": ["weather"], "timestamp": None}
    await c.send_json({"action": "subscribe", "topics": ["accidents", "cameras"]})
    assert (await c.recv_json())["topics"] == ["accidents", "cameras", "weather"]
    await c.send_json({"action": "unsubscribe", "topics": ["cameras"]})
    assert (await c.recv_json())["topics"] == ["accidents", "weather"]


async def test_unsubscribe_from_all_keeps_every_other_topic(daemon):
    c = await connect(daemon)
    await c.send_json({"action": "unsubscribe", "topics": ["weather"]})
    assert (await c.recv_json())["topics"] == sorted(t for t in DEFAULT_TOPICS if t != "weather")
    await publish(daemon, {"topic": "weather", "data": [{"id": "w1", "t": 30}]})
    await publish(daemon, {"topic": "accidents", "data": [{"id": "a1"}]})
    msg = await c.recv_json()
    assert msg["topic"] == "accidents"  # the weather UPDATE never arrived


async def test_unknown_topic_is_an_error_and_changes_nothing(daemon):
    c = await connect(daemon)
    await c.send_json({"action": "subscribe", "topics": ["accidents", "nope", "zzz"]})
    err = await c.recv_json()
    assert err["type"] == "ERROR"
    assert err["error"]["code"] == "unknown_topic"
    assert "nope" in err["error"]["message"] and "zzz" in err["error"]["message"]
    await c.send_json({"action": "subscribe", "topics": ["accidents"]})
    assert (await c.recv_json())["topics"] == ["accidents"]


async def test_updates_reach_exactly_the_subscribers_in_order_with_seq(daemon):
    acc = await connect(daemon)
    wea = await connect(daemon)
    everyone = await connect(daemon)
    await acc.send_json({"action": "subscribe", "topics": ["accidents"]})
    await acc.recv_json()
    await wea.send_json({"action": "subscribe", "topics": ["weather"]})
    await wea.recv_json()
    for i in range(5):
        res = await publish(daemon, {"topic": "accidents", "data": [{"id": f"a{i}", "n": i}]})
        assert res == {"ok": True, "seq": i + 1, "recipients": 2}
    got = [await acc.recv_json() for _ in range(5)]
    assert [m["seq"] for m in got] == [1, 2, 3, 4, 5]
    assert got[0]["type"] == "UPDATE" and got[0]["topic"] == "accidents" and got[0]["data"] == [{"id": "a0", "n": 0}]
    assert [m["seq"] for m in [await everyone.recv_json() for _ in range(5)]] == [1, 2, 3, 4, 5]
    assert await wea.barrier() == []


async def test_alert_is_routed_and_does_not_change_state(daemon):
    c = await connect(daemon)
    res = await publish(daemon, {"topic": "accidents", "type": "ALERT", "data": {"severity": "fatal"}})
    assert res["seq"] == 1
    msg = await c.recv_json()
    assert msg["type"] == "ALERT" and msg["data"] == {"severity": "fatal"} and msg["seq"] == 1
    await c.send_json({"action": "snapshot", "topics": ["accidents"]})
    assert (await c.recv_json())["data"] == {"accidents": []}


async def test_state_upsert_removed_and_snapshot_action(daemon):
    c = await connect(daemon)
    await publish(daemon, {"topic": "cameras", "data": [{"id": "c1", "status": "online"}, {"id": 2, "status": "online"}]})
    await publish(daemon, {"topic": "cameras", "data": [{"id": "c1", "status": "offline"}], "removed": ["2"]})
    first, second = await c.recv_json(), await c.recv_json()
    assert second["removed"] == ["2"] and "removed" not in first
    await c.send_json({"action": "snapshot", "topics": ["cameras"]})
    snap = await c.recv_json()
    assert snap["data"] == {"cameras": [{"id": "c1", "status": "offline"}]}
    # a new client gets the same state in its first SNAPSHOT
    late = await connect(daemon)
    await late.send_json({"action": "snapshot"})
    assert (await late.recv_json())["data"]["cameras"] == [{"id": "c1", "status": "offline"}]


async def test_subscribe_with_snapshot_sends_only_new_topics(daemon):
    await publish(daemon, {"topic": "weather", "data": [{"id": "w"}]})
    c = await connect(daemon)
    await c.send_json({"action": "subscribe", "topics": ["accidents"]})
    await c.recv_json()
    await c.send_json({"action": "subscribe", "topics": ["accidents", "weather"], "snapshot": True})
    assert (await c.recv_json())["type"] == "SUBSCRIBED"
    snap = await c.recv_json()
    assert snap["type"] == "SNAPSHOT" and snap["data"] == {"weather": [{"id": "w"}]}


async def test_legacy_type_and_channels_aliases(daemon):
    c = await connect(daemon)
    await c.send_json({"type": "subscribe", "channels": ["accidents"]})
    assert (await c.recv_json())["topics"] == ["accidents"]
    await c.send_json({"type": "ping"})
    assert (await c.recv_json())["type"] == "PONG"
    await c.send_json({"type": "unsubscribe", "channels": ["accidents"]})
    assert (await c.recv_json())["topics"] == []


async def test_broadcast_reaches_every_client_whatever_its_set(daemon):
    a = await connect(daemon)
    b = await connect(daemon)
    await b.send_json({"action": "subscribe", "topics": []})
    assert (await b.recv_json())["topics"] == []
    res = await publish(daemon, {"type": "ALERT", "data": {"message": "flood warning"}}, "/api/broadcast")
    assert res == {"ok": True, "recipients": 2}
    for c in (a, b):
        msg = await c.recv_json()
        assert msg["type"] == "ALERT" and msg["data"] == {"message": "flood warning"} and "topic" not in msg
