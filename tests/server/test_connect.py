"""PROTOCOL.md section 1 over real sockets: handshake paths, the connection message, the SNAPSHOT."""

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from tests.conftest import DEFAULT_TOPICS, connect
from tests.wsclient import RawClient, Rejected


async def test_connection_message_then_snapshot_of_every_topic(daemon):
    client = await RawClient.connect(daemon.ws_port, "/")
    hello, snapshot = await client.handshake_messages()
    assert hello["type"] == "connection"
    assert hello["message"] == "Connected to HCMC Traffic Monitoring System"
    assert hello["heartbeatInterval"] == 10000
    assert hello["topics"] == DEFAULT_TOPICS
    assert isinstance(hello["clientId"], str) and hello["clientId"]
    assert hello["timestamp"].endswith("Z") and len(hello["timestamp"]) == 24
    assert snapshot["type"] == "SNAPSHOT"
    assert snapshot["data"] == {t: [] for t in DEFAULT_TOPICS}
    assert "resync" not in snapshot
    await client.aclose()


async def test_ws_path_is_accepted_and_other_paths_get_404(daemon):
    client = await connect(daemon, "/ws")
    await client.aclose()
    client = await connect(daemon, "/?token=abc")
    await client.aclose()
    try:
        await RawClient.connect(daemon.ws_port, "/elsewhere")
    except Rejected as rej:
        assert rej.status == 404
    else:
        raise AssertionError("handshake on /elsewhere was accepted")


async def test_each_client_gets_its_own_id(daemon):
    a = await RawClient.connect(daemon.ws_port)
    b = await RawClient.connect(daemon.ws_port)
    ida = (await a.recv_json())["clientId"]
    idb = (await b.recv_json())["clientId"]
    assert ida != idb


async def test_welcome_and_default_topics_come_from_config(daemon_factory):
    async with daemon_factory({"server": {"welcome": "Xin chào", "default_topics": ["accidents"]}, "heartbeat": {"interval": 2.5, "timeout": 9}}) as d:
        client = await RawClient.connect(d.ws_port)
        hello, snapshot = await client.handshake_messages()
        assert hello["message"] == "Xin chào"
        assert hello["heartbeatInterval"] == 2500
        assert list(snapshot["data"]) == ["accidents"]
        await client.send_json({"action": "subscribe", "topics": ["weather"]})
        # the first subscribe replaces the default set
        assert (await client.recv_json())["topics"] == ["weather"]


async def test_handshake_timeout_drops_a_silent_connection(daemon_factory):
    async with daemon_factory({"server": {"handshake_timeout": 0.3}}) as d:
        stream = await trio.open_tcp_stream("127.0.0.1", d.ws_port)
        with trio.fail_after(3):
            assert await stream.receive_some(100) == b""


async def test_the_101_the_connection_message_and_the_snapshot_arrive_in_one_read(daemon):
    """On a plain socket the 101 is written with the first frames in one system call: a client
    reads its whole opening at once (the 101 alone, then the frames a flusher pass later, cost
    every connecting client one read and one wake-up more)."""
    for _ in range(5):
        stream = await trio.open_tcp_stream("127.0.0.1", daemon.ws_port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/")))
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(stream.socket)
        ws.receive_data(await stream.socket.recv(1 << 16))  # one read, at the first wake-up (data is there)
        events = list(ws.events())
        assert isinstance(events[0], AcceptConnection)
        texts = [e.data for e in events[1:] if isinstance(e, TextMessage)]
        assert len(texts) == 2 and '"type":"connection"' in texts[0] and '"type":"SNAPSHOT"' in texts[1]
        await stream.aclose()
