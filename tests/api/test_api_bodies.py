"""Review 1 of issue 12: an API body's integers beyond 64 bits are refused, not published as
floats (r-numbers), and a request framed both by Content-Length and chunked is refused (RFC 9112 6.1)."""

from __future__ import annotations

import json

import trio

from tests.api.test_api_hardening import _raw, _read_to_eof
from tests.conftest import api_client, connect

JSON = {"content-type": "application/json"}


async def test_integers_beyond_64_bits_are_refused_naming_where_not_published_as_floats(daemon):
    c = await connect(daemon)
    async with api_client(daemon) as http:
        for number in ("18446744073709551616", "-9223372036854775809", "100000000000000000000000"):
            for path, body, where in [
                ("/api/publish", '{"topic": "weather", "data": [{"id": "w"}, {"id": "x", "v": [%s]}]}', "entity 1 (id 'x')"),
                ("/api/publish", '{"topic": "weather", "data": {"id": %s}}', "entity 0 (id %s)" % number),
                ("/api/publish", '{"topic": "accidents", "type": "ALERT", "data": {"n": %s}}', "ALERT data"),
                ("/api/broadcast", '{"type": "ALERT", "data": %s}', "ALERT data"),
            ]:
                r = await http.post(path, content=(body % number).encode(), headers=JSON)
                assert r.status_code == 400, (number, body, r.text)
                message = r.json()["error"]["message"]
                assert message.startswith(where) and "64-bit range" in message, message
        # the largest and smallest 64-bit integers are published exactly, as are long digit strings
        body = '{"topic": "weather", "data": [{"id": 18446744073709551615, "min": -9223372036854775808, "s": "12345678901234567890123"}]}'
        assert (await http.post("/api/publish", content=body.encode(), headers=JSON)).status_code == 200
        # NaN is as refused on the slow path as on orjson's
        r = await http.post("/api/publish", content=b'{"topic": "weather", "data": [{"id": 1, "n": 12345678901234567890, "v": NaN}]}', headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    msgs = await c.barrier()
    assert [m["data"] for m in msgs if m["type"] == "UPDATE"] == [[{"id": 18446744073709551615, "min": -9223372036854775808, "s": "12345678901234567890123"}]]


async def test_an_id_that_is_not_an_integer_is_named_as_such(daemon):
    async with api_client(daemon) as http:
        for ident in ("1e23", "7.5"):
            r = await http.post("/api/publish", content=b'{"topic": "weather", "data": [{"id": %s}]}' % ident.encode(), headers=JSON)
            assert r.status_code == 400
            assert "is a number but not an integer" in r.json()["error"]["message"], r.text


async def test_content_length_and_chunked_together_are_refused_and_the_connection_closed(daemon):
    c = await connect(daemon)
    port = daemon.api_port
    body = b'{"topic":"accidents","type":"ALERT","data":{"message":"smuggled"}}'
    request = (f"POST /api/publish HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
               f"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"
    stream = await _raw(port, request)
    with trio.fail_after(5):
        answer = await _read_to_eof(stream)  # EOF: closed after the answer, as RFC 9112 6.1 requires
    await stream.aclose()
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "bad_request"
    assert await c.barrier() == []
