"""PROTOCOL.md section 7: every route, auth, and every error answer; nothing published from a rejected request."""

import trio

from tests.conftest import api_client, connect


async def test_health_and_readiness(daemon):
    async with api_client(daemon) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200 and r.json() == {"ok": True}
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["ready"] is True


async def test_readyz_is_503_while_draining(daemon_factory):
    async with daemon_factory() as d:
        c = await connect(d, auto_pong=True)
        async with api_client(d) as http:
            d.clients.draining = True  # what the drain sets first
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["shutting_down"] is True
            d.clients.draining = False
        await c.aclose()


async def test_stats_counts_clients_subscribers_entities_seq(daemon):
    a = await connect(daemon)
    b = await connect(daemon)
    await b.send_json({"action": "subscribe", "topics": ["weather"]})
    await b.recv_json()
    async with api_client(daemon) as http:
        await http.post("/api/publish", json={"topic": "weather", "data": [{"id": "w1"}, {"id": "w2"}]})
        stats = (await http.get("/api/stats")).json()
    assert stats["clients"] == 2
    weather, accidents = stats["topics"]["weather"], stats["topics"]["accidents"]
    assert weather == {"subscribers": 2, "entities": 2, "seq": 1, "epoch": weather["epoch"], "history": 1, "historyBytes": weather["historyBytes"]}
    assert len(weather["epoch"]) >= 8 and weather["historyBytes"] > 0
    assert accidents == {"subscribers": 1, "entities": 0, "seq": 0, "epoch": accidents["epoch"], "history": 0, "historyBytes": 0}
    await a.aclose()


async def test_publish_and_broadcast_answers(daemon):
    c = await connect(daemon)
    async with api_client(daemon) as http:
        r = await http.post("/api/publish", json={"topic": "accidents", "type": "UPDATE", "data": [{"id": "a"}], "removed": ["b"]})
        assert r.json() == {"ok": True, "seq": 1, "recipients": 1}
        r = await http.post("/api/broadcast", json={"type": "ALERT", "topic": "accidents", "data": {"x": 1}})
        assert r.json() == {"ok": True, "recipients": 1}
    assert (await c.recv_json())["seq"] == 1
    alert = await c.recv_json()
    assert alert["type"] == "ALERT" and alert["topic"] == "accidents" and alert["seq"] == 2


async def test_bad_bodies_get_400_404_413_and_publish_nothing(daemon_factory):
    async with daemon_factory({"api": {"max_body_bytes": 2000}}) as d:
        c = await connect(d)
        async with api_client(d) as http:
            for body, status, code in [
                (b"{not json", 400, "bad_request"),
                (b"[1]", 400, "bad_request"),
                (b'{"topic": "accidents", "type": "DELETE", "data": []}', 400, "bad_request"),
                (b'{"type": "UPDATE", "data": []}', 400, "bad_request"),
                (b'{"topic": "accidents", "data": [{"name": "no id"}]}', 400, "bad_request"),
                (b'{"topic": "accidents", "data": [{"id": true}]}', 400, "bad_request"),
                (b'{"topic": "accidents", "data": [], "removed": "x"}', 400, "bad_request"),
                (b'{"topic": "accidents", "type": "ALERT"}', 400, "bad_request"),
                (b'{"topic": "accidents", "data": [], "extra": 1}', 400, "bad_request"),
                (b'{"topic": "nope", "data": []}', 404, "unknown_topic"),
                (b'{"topic": "accidents", "data": [{"id": "x", "pad": "' + b"x" * 3000 + b'"}]}', 413, "too_large"),
            ]:
                r = await http.post("/api/publish", content=body, headers={"content-type": "application/json"})
                assert r.status_code == status, (body[:60], r.text)
                assert r.json()["ok"] is False and r.json()["error"]["code"] == code
                assert r.json()["error"]["message"]
            stats = (await http.get("/api/stats")).json()
        assert all(t["seq"] == 0 for t in stats["topics"].values())
        assert await c.barrier() == []


async def test_unknown_path_and_wrong_method(daemon):
    async with api_client(daemon) as http:
        r = await http.get("/api/nothing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await http.get("/api/publish")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = await http.post("/api/stats")
        assert r.status_code == 405


async def test_api_key_is_required_when_set(daemon_factory):
    async with daemon_factory({"api": {"key": "s3cret"}}) as d:
        async with api_client(d) as http:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                r = await http.post("/api/publish", json={"topic": "accidents", "data": []}, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            r = await http.get("/api/stats")
            assert r.status_code == 401
            r = await http.get("/healthz")  # health is not behind the key
            assert r.status_code == 200
            r = await http.post("/api/publish", json={"topic": "accidents", "data": []}, headers={"authorization": "Bearer s3cret"})
            assert r.status_code == 200 and r.json()["seq"] == 1


async def test_concurrent_publishes_reach_every_client_in_one_order(daemon):
    clients = [await connect(daemon) for _ in range(20)]
    async with api_client(daemon) as http:

        async def post(i):
            r = await http.post("/api/publish", json={"topic": "patterns", "data": [{"id": str(i)}]})
            assert r.status_code == 200

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(post, i)
    orders = []
    for c in clients:
        msgs = [await c.recv_json() for _ in range(50)]
        assert [m["seq"] for m in msgs] == list(range(1, 51))
        orders.append([m["data"][0]["id"] for m in msgs])
    assert all(order == orders[0] for order in orders)
    assert sorted(orders[0], key=int) == [str(i) for i in range(50)]


async def test_the_dashboard_page_is_told_where_the_websocket_listener_is(daemon):
    async with api_client(daemon) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f'<meta name="uipd-ws" content="ws {daemon.ws_port} /">' in page.text
        script = await http.get("/static/dashboard/main.js")
        assert script.status_code == 200 and "uipd-ws" in script.text
        assert (await http.get("/static/../../config.py")).status_code == 404
