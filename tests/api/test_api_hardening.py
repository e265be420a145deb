"""Issue 12, items 13 and 14: a web page on another site cannot publish through the API (Origin,
Sec-Fetch-Site, JSON-only bodies), and a slow request head or body is cut off in bounded time."""

from __future__ import annotations

import json
import socket

import trio
from attrs import evolve

from tests.conftest import api_client, connect
from tests.sources.test_supervision import inline_plugin
from uipd.runtime import reload
from uipd.plugin import HttpResponse
from uipd.sources.registry import check_config

EVIL = "https://evil.example"
ALERT = {"topic": "accidents", "type": "ALERT", "data": {"message": "fake: evacuate"}}
JSON = "application/json"


async def _seqs(http):
    stats = (await http.get("/api/stats")).json()
    return {name: t["seq"] for name, t in stats["topics"].items()}


async def test_a_cross_site_text_plain_post_is_refused_and_publishes_nothing(daemon):
    """What a no-cors fetch from any page the operator visits sends: it used to reach subscribers."""
    c = await connect(daemon)
    body = json.dumps(ALERT).encode()
    async with api_client(daemon) as http:
        for path in ("/api/publish", "/api/broadcast"):
            for headers, status, code in [
                ({"content-type": "text/plain;charset=UTF-8", "origin": EVIL}, 403, "forbidden_origin"),
                ({"content-type": JSON, "origin": EVIL}, 403, "forbidden_origin"),
                ({"content-type": JSON, "origin": "null"}, 403, "forbidden_origin"),  # sandboxed iframe, file://
                ({"content-type": JSON, "sec-fetch-site": "cross-site"}, 403, "forbidden_origin"),
                ({"content-type": JSON, "sec-fetch-site": "same-site"}, 403, "forbidden_origin"),  # another port of this host
                ({"content-type": "text/plain;charset=UTF-8"}, 415, "unsupported_media_type"),
            ]:
                r = await http.post(path, content=body, headers=headers)
                assert r.status_code == status, (path, headers, r.text)
                assert r.json()["ok"] is False and r.json()["error"]["code"] == code
        # several Origin headers: every one must pass, so "good, evil" is refused
        own = f"http://127.0.0.1:{daemon.api_port}"
        r = await http.post("/api/publish", content=body, headers=[("content-type", JSON), ("origin", own), ("origin", EVIL)])
        assert r.status_code == 403
        # a cross-site read is refused too (CORS would hide the answer anyway)
        assert (await http.get("/api/stats", headers={"origin": EVIL})).status_code == 403
        assert set((await _seqs(http)).values()) == {0}
    assert await c.barrier() == []


async def test_only_json_bodies_are_read(daemon):
    async with api_client(daemon) as http:
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                             "application/json; charset=iso-8859-1", "application/jsonp", None]:
            headers = {} if content_type is None else {"content-type": content_type}
            r = await http.post("/api/publish", content=b'{"topic": "weather", "data": [{"id": "w"}]}', headers=headers)
            assert r.status_code == 415, (content_type, r.text)
            assert r.headers["content-type"] == JSON and r.json()["error"]["code"] == "unsupported_media_type"
        for seq, content_type in enumerate([JSON, "application/json; charset=utf-8", "Application/JSON;charset=\"UTF-8\""], 1):
            r = await http.post("/api/publish", content=b'{"topic": "weather", "data": [{"id": "w"}]}', headers={"content-type": content_type})
            assert r.status_code == 200 and r.json()["seq"] == seq, (content_type, r.text)


async def test_the_dashboard_the_cli_and_allowed_origins_keep_working(daemon_factory):
    async with daemon_factory({"api": {"allowed_origins": ["https://Ops.example"]}}) as d:
        c = await connect(d)
        own = f"http://127.0.0.1:{d.api_port}"
        async with api_client(d) as http:
            # the dashboard's own page (same origin), a listed origin (trailing slash, case), and the
            # CLI (httpx json=, no Origin): each publishes
            for headers in ({"origin": own, "sec-fetch-site": "same-origin"}, {"origin": "https://ops.example/"}, {}):
                r = await http.post("/api/publish", json=ALERT, headers=headers)
                assert r.status_code == 200, (headers, r.text)
            # opening the dashboard from a link on another site is a navigation: no Origin, allowed
            page = await http.get("/", headers={"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"})
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            stats = await http.get("/api/stats", headers={"origin": own, "sec-fetch-site": "same-origin"})
            assert stats.status_code == 200 and stats.json()["topics"]["accidents"]["seq"] == 3
        assert [m["seq"] for m in await c.barrier()] == [1, 2, 3]


class Receiver:
    """A pushed-notification route that, like NGSI-LD's, reads the body as JSON whatever its type."""

    topics = ("pushed",)

    def __init__(self):
        self.publisher = None

    def http_routes(self):
        return {"notify": self.notify}

    async def notify(self, request):
        entities = json.loads(request.body)["data"]
        self.publisher.update("pushed", entities)
        return HttpResponse(200, {"ok": True, "content_type": request.headers.get("content-type")})

    async def run(self, publisher):
        self.publisher = publisher
        publisher.ready()
        await trio.sleep_forever()


async def test_source_routes_refuse_cross_site_requests_and_keep_brokers_working(daemon_factory):
    """Source routes get the Origin rule (a no-cors text/plain POST could otherwise feed a source that
    reads JSON anyway), not the content-type rule: what a route accepts is its plugin's contract."""
    async with daemon_factory({"sources": {"rx": {"plugin": "receiver"}}}, plugins=(inline_plugin("receiver", Receiver),)) as d:
        c = await connect(d)
        note = json.dumps({"type": "Notification", "data": [{"id": "e1"}]}).encode()
        async with api_client(d) as http:
            for headers in ({"content-type": "text/plain", "origin": EVIL}, {"content-type": "text/plain", "sec-fetch-site": "cross-site"}):
                r = await http.post("/sources/rx/notify", content=note, headers=headers)
                assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
            # what NGSI-LD brokers send: no Origin, application/json or application/ld+json
            for content_type in (JSON, "application/ld+json"):
                r = await http.post("/sources/rx/notify", content=note, headers={"content-type": content_type})
                assert r.status_code == 200 and r.json()["content_type"] == content_type
            assert (await _seqs(http))["pushed"] == 2
        assert [m["seq"] for m in await c.barrier()] == [1, 2]


# -- slow requests (item 14) -------------------------------------------------------------------


async def _raw(port: int, data: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    return stream


async def _read_to_eof(stream: trio.SocketStream) -> bytes:
    got = b""
    while chunk := await stream.receive_some(65536):
        got += chunk
    return got


def _head(port: int, length: int) -> bytes:
    return (f"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n").encode()


async def test_a_short_body_gets_408_and_the_connection_closes(daemon_factory):
    async with daemon_factory({"api": {"request_timeout": 0.5}}) as d:
        c = await connect(d)
        stream = await _raw(d.api_port, _head(d.api_port, 10) + b'{"top')  # 5 of the 10 bytes promised
        start = trio.current_time()
        with trio.fail_after(5):
            answer = await _read_to_eof(stream)  # EOF: the server closed it
        assert 0.3 < trio.current_time() - start < 3  # 75-100 % of request_timeout (uipd.server.clock.spread)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        await stream.aclose()
        assert await c.barrier() == []


async def test_a_slow_request_head_is_closed_even_while_bytes_trickle_in(daemon_factory):
    async with daemon_factory({"api": {"request_timeout": 0.5}}) as d:
        silent = await _raw(d.api_port, b"POST /api/publish HTTP/1.1\r\nho")
        trickle = await _raw(d.api_port, b"GET /healthz HTTP/1.1\r\n")
        start = trio.current_time()
        with trio.fail_after(5):
            try:
                for _ in range(100):  # a header byte every 50 ms: never silent, never complete
                    await trickle.send_all(b"x")
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                pass  # the server closed it: what we wait for
            await _read_to_eof(trickle)
            assert await _read_to_eof(silent) == b""
        assert trio.current_time() - start < 3
        for s in (silent, trickle):
            await s.aclose()


async def test_two_hundred_slow_requests_do_not_stall_a_normal_one(daemon_factory):
    async with daemon_factory() as d:  # the default request_timeout: they stay open while we measure
        slow = []
        for i in range(200):
            slow.append(await _raw(d.api_port, _head(d.api_port, 10) + b"12345" if i % 2 else b"POST /api/publish HTTP/1.1\r\nhost"))
        times = []
        for _ in range(10):  # a new connection each: the accept path is under the same load
            async with api_client(d) as http:
                start = trio.current_time()
                r = await http.get("/healthz")
                times.append(trio.current_time() - start)
                assert r.status_code == 200
        async with api_client(d) as http:
            r = await http.post("/api/publish", json={"topic": "weather", "data": [{"id": "w"}]})
            assert r.status_code == 200 and r.json()["seq"] == 1
        assert max(times) < 0.1, times
        for s in slow:
            await s.aclose()


async def test_allowed_origins_follow_a_reload(daemon):
    body = {"topic": "weather", "data": [{"id": "w"}]}
    async with api_client(daemon) as http:
        assert (await http.post("/api/publish", json=body, headers={"origin": "https://ops.example"})).status_code == 403
        new = evolve(daemon.config, api=evolve(daemon.config.api, allowed_origins=("https://ops.example",)))
        await reload.apply(daemon, check_config(new, daemon.registry))  # what SIGHUP applies
        assert (await http.post("/api/publish", json=body, headers={"origin": "https://ops.example"})).status_code == 200
        assert (await http.post("/api/publish", json=body, headers={"origin": EVIL})).status_code == 403


async def test_a_host_that_does_not_name_this_listener_is_refused_dns_rebinding(daemon_factory):
    """Review r8: a page on evil.example whose name was rebound to 127.0.0.1 sends Host and Origin
    of evil.example; the Origin check took its own origin from that Host, so the page published."""
    async with daemon_factory({"api": {"allowed_hosts": ["Ops.Example."]}}) as d:
        c = await connect(d)
        port = d.api_port
        async with api_client(d) as http:
            rebound = {"host": f"evil.example:{port}", "origin": f"http://evil.example:{port}"}
            for method, path in [("POST", "/api/publish"), ("POST", "/api/broadcast"), ("GET", "/api/stats"), ("GET", "/"), ("GET", "/metrics")]:
                r = await http.request(method, path, json=ALERT if method == "POST" else None, headers=rebound)
                assert r.status_code == 421, (path, r.text)
                assert r.headers["content-type"] == JSON and r.json()["error"]["code"] == "unknown_host"
            # no Origin (a same-origin GET of the rebound page) does not get past it either (two Host
            # headers never reach the app: h11 answers 400)
            assert (await http.get("/api/stats", headers={"host": "evil.example"})).status_code == 421
            # the names of this listener: IP addresses, localhost, the hostname, allowed_hosts; the
            # dashboard's page on each publishes (its Origin is built from the same Host)
            for name in ["127.0.0.1", "[::1]", "localhost", "LocalHost", socket.gethostname(), "ops.example", "10.1.2.3"]:
                headers = {"host": f"{name}:{port}", "origin": f"http://{name}:{port}".lower()}
                r = await http.post("/api/publish", json={"topic": "weather", "data": [{"id": name}]}, headers=headers)
                assert r.status_code == 200, (name, r.text)
            assert (await http.get("/api/stats", headers={"host": "ops.example"})).status_code == 200
        assert [m["type"] for m in await c.barrier()] == ["UPDATE"] * 7  # nothing of evil.example's reached anyone
