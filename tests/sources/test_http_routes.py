"""A source's own HTTP routes on the API listener (e.g. pushed notifications)."""

from tests.conftest import api_client, connect
from tests.sources.test_supervision import inline_plugin
from uipd.plugin import HttpResponse


class Receiver:
    topics = ("pushed",)

    def __init__(self):
        self.publisher = None

    def http_routes(self):
        return {"notify": self.notify, "crash": self.crash}

    async def notify(self, request):
        if request.method != "POST":
            return HttpResponse(405, {"error": "POST only"})
        self.publisher.update("pushed", [{"id": request.headers["x-id"], "body": request.body.decode()}])
        return HttpResponse(204, b"", "text/plain")

    async def crash(self, request):
        raise RuntimeError("handler bug")

    async def run(self, publisher):
        self.publisher = publisher
        publisher.ready()
        import trio

        await trio.sleep_forever()


async def test_source_routes_are_served_behind_the_api_key(daemon_factory):
    plugin = inline_plugin("receiver", Receiver)
    async with daemon_factory({"api": {"key": "k"}, "sources": {"rx": {"plugin": "receiver"}}}, plugins=(plugin,)) as d:
        c = await connect(d)
        auth = {"authorization": "Bearer k"}
        async with api_client(d) as http:
            r = await http.post("/sources/rx/notify", content=b"hello", headers={"x-id": "e1"})
            assert r.status_code == 401
            r = await http.post("/sources/rx/notify", content=b"hello", headers={"x-id": "e1", **auth})
            assert r.status_code == 204
            r = await http.get("/sources/rx/notify", headers=auth)
            assert r.status_code == 405
            r = await http.post("/sources/rx/crash", headers=auth)
            assert r.status_code == 500 and r.json()["error"]["code"] == "source_error"
            r = await http.post("/sources/rx/missing", headers=auth)
            assert r.status_code == 404
            r = await http.post("/sources/other/notify", headers=auth)
            assert r.status_code == 404
        msg = await c.recv_json()
        assert msg["topic"] == "pushed" and msg["data"] == [{"id": "e1", "body": "hello"}]
