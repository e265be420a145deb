"""PROTOCOL.md section 6 and the connection limits: tokens, JWT (HS256/RS256, exp/nbf, the topics
claim, expiry while connected), allowed origins, TLS, max clients, per-address and subscription limits."""

import base64
import hashlib
import hmac
import logging
import ssl
import time

import jwt
import pytest
import trio
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import connect
from tests.wsclient import RawClient, Rejected
from uipd.runtime.auth import token_from


async def refused(port, path="/", **kw):
    with pytest.raises(Rejected) as info:
        await RawClient.connect(port, path, **kw)
    return info.value.status


def test_token_is_taken_from_bearer_header_or_query():
    assert token_from("/?token=abc", {}) == "abc"
    assert token_from("/ws?x=1&token=a%20b", {}) == "a b"
    assert token_from("/", {"authorization": "Bearer xyz"}) == "xyz"
    assert token_from("/?token=q", {"authorization": "bearer h"}) == "h"
    assert token_from("/", {"authorization": "Basic Zm9v"}) is None


async def test_static_tokens(daemon_factory, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("# operators\nfile-token\n\n")
    async with daemon_factory({"auth": {"mode": "token", "tokens": ["inline-token"], "token_file": str(token_file)}}) as d:
        assert await refused(d.ws_port) == 401
        assert await refused(d.ws_port, "/?token=wrong") == 401
        await connect(d, "/?token=inline-token")
        await connect(d, "/ws", headers=[(b"authorization", b"Bearer file-token")])
        assert d.refusals["unauthorized"] == 2


def hs256(claims, key="k" * 32):
    return jwt.encode(claims, key, algorithm="HS256")


async def test_jwt_hs256_exp_nbf_and_topics_claim(daemon_factory):
    async with daemon_factory({"auth": {"mode": "jwt", "jwt_key": "k" * 32, "jwt_leeway": 1.0}}) as d:
        now = time.time()
        assert await refused(d.ws_port, "/?token=" + hs256({"exp": now - 60})) == 401
        assert await refused(d.ws_port, "/?token=" + hs256({"nbf": now + 60})) == 401
        assert await refused(d.ws_port, "/?token=" + hs256({"exp": now + 60}, key="x" * 32)) == 401
        assert await refused(d.ws_port, "/?token=" + hs256({"topics": "weather"})) == 401
        # an unrestricted token
        await connect(d, "/?token=" + hs256({"sub": "ops", "exp": now + 60}))
        # a token limited to two topics
        c = await RawClient.connect(d.ws_port, "/?token=" + hs256({"topics": ["weather", "accidents"], "exp": now + 60}))
        hello, snapshot = await c.handshake_messages()
        assert hello["topics"] == ["weather", "accidents"]
        assert list(snapshot["data"]) == ["weather", "accidents"]
        for request in (
            {"action": "subscribe", "topics": ["cameras"]},
            {"action": "subscribe", "topics": ["all"]},
            {"action": "snapshot", "topics": ["cameras"]},
        ):
            await c.send_json(request)
            err = await c.recv_json()
            assert err["type"] == "ERROR" and err["error"]["code"] == "forbidden", err
        await c.send_json({"action": "subscribe", "topics": ["weather"]})
        assert (await c.recv_json())["topics"] == ["weather"]


def signed(payload: bytes, key=b"k" * 32) -> str:
    """An HS256 token over a raw payload: claims json.dumps would not write (10**400, NaN)."""
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=")  # noqa: E731
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(payload)
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


async def test_a_jwt_with_a_malformed_claim_is_refused_401_with_one_line(daemon_factory, caplog):
    caplog.set_level(logging.INFO)
    payloads = [
        b'{"exp": 1' + b"0" * 400 + b"}",  # was an OverflowError: no answer, a traceback per handshake
        b'{"exp": "99999999999"}',  # was accepted as a token that never expires
        b'{"nbf": "1"}',
        b'{"exp": NaN}',
        b'{"exp": Infinity}',
        b'{"topics": [1]}',
    ]
    async with daemon_factory({"auth": {"mode": "jwt", "jwt_key": "k" * 32}}) as d:
        for payload in payloads:
            assert await refused(d.ws_port, "/?token=" + signed(payload)) == 401, payload
        refusals = [r for r in caplog.records if "handshake from" in r.getMessage()]
        assert len(refusals) == len(payloads) and all(r.levelno == logging.INFO and "invalid JWT" in r.getMessage() for r in refusals)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_connection_is_closed_4001_when_its_jwt_expires(daemon_factory):
    config = {"auth": {"mode": "jwt", "jwt_key": "k" * 32, "jwt_leeway": 0.0}, "heartbeat": {"interval": 0.4, "timeout": 5}}
    async with daemon_factory(config) as d:
        c = await connect(d, "/?token=" + hs256({"exp": int(time.time()) + 2}))
        started = time.monotonic()
        assert await c.expect_close(timeout=6) == 4001
        assert 0.5 < time.monotonic() - started < 4
        assert d.hub.counters.expired_closes == 1


async def test_jwt_rs256_with_a_key_file(daemon_factory, tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(public_pem)
    config = {"auth": {"mode": "jwt", "jwt_algorithm": "RS256", "jwt_key_file": str(tmp_path / "pub.pem")}}
    async with daemon_factory(config) as d:
        token = jwt.encode({"exp": time.time() + 60}, private, algorithm="RS256")
        await connect(d, "/?token=" + token)
        # an HS256 token signed with the public key as secret must not pass (algorithm confusion)
        forged = jwt.encode({"exp": time.time() + 60}, public_pem.decode()[:64], algorithm="HS256")
        assert await refused(d.ws_port, "/?token=" + forged) == 401


async def test_allowed_origins(daemon_factory):
    async with daemon_factory({"server": {"allowed_origins": ["https://city.example"]}}) as d:
        assert await refused(d.ws_port, headers=[(b"origin", b"https://evil.example")]) == 403
        await connect(d, headers=[(b"origin", b"https://city.example")])
        await connect(d)  # no Origin: not a browser
        assert d.refusals["forbidden_origin"] == 1


async def test_a_repeated_origin_cannot_slip_past_the_allow_list(daemon_factory):
    """Two Origin headers, "evil" then "good": the last one was checked, and the handshake passed."""
    async with daemon_factory({"server": {"allowed_origins": ["https://city.example"]}}) as d:
        evil_then_good = [(b"origin", b"https://evil.example"), (b"origin", b"https://city.example")]
        assert await refused(d.ws_port, headers=evil_then_good) == 400
        assert await refused(d.ws_port, headers=evil_then_good[::-1]) == 400
        assert d.refusals == {"duplicate_header": 2}
        assert not d.connections


def tls_files(tmp_path) -> tuple[dict, ssl.SSLContext]:
    """A [server] table serving wss:// with a fresh CA's certificate, and a client context trusting it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return {"tls_cert": str(tmp_path / "server.pem"), "tls_key": str(tmp_path / "key.pem")}, client_ctx


async def test_tls_serves_wss(daemon_factory, tmp_path):
    server, client_ctx = tls_files(tmp_path)
    async with daemon_factory({"server": server}) as d:
        c = await RawClient.connect(d.ws_port, ssl_context=client_ctx)
        hello, snapshot = await c.handshake_messages()
        assert hello["type"] == "connection" and snapshot["type"] == "SNAPSHOT"
        await c.send_json({"action": "ping"})
        assert (await c.recv_json())["type"] == "PONG"
        # a plain-text client gets nothing it can use
        with pytest.raises(Exception):
            await RawClient.connect(d.ws_port)


async def test_max_clients_and_per_address_limits(daemon_factory):
    async with daemon_factory({"server": {"max_clients": 3}}) as d:
        clients = [await connect(d) for _ in range(3)]
        assert await refused(d.ws_port) == 503
        await clients[0].aclose()
        with trio.fail_after(5):
            while len(d.connections) > 2:
                await trio.sleep(0.02)
        await connect(d)
        assert d.refusals["too_many_clients"] == 1
    async with daemon_factory({"server": {"max_connections_per_ip": 2}}) as d:
        kept = [await connect(d), await connect(d)]
        assert await refused(d.ws_port) == 429
        assert len(kept) == 2
        assert d.refusals["too_many_per_ip"] == 1


async def test_concurrent_tls_handshakes_do_not_overshoot_max_clients(daemon_factory, tmp_path):
    """With TLS the 101 is written with an await between admission and registration: handshakes
    admitted meanwhile did not see each other, and more than max_clients got in."""
    server, client_ctx = tls_files(tmp_path)
    async with daemon_factory({"server": {**server, "max_clients": 3}}) as d:
        accepted: list[RawClient] = []
        statuses: list[int] = []
        most = 0

        async def one() -> None:
            try:
                accepted.append(await RawClient.connect(d.ws_port, ssl_context=client_ctx))
            except Rejected as rej:
                statuses.append(rej.status)

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, len(d.connections))
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            async with trio.open_nursery() as clients:
                for _ in range(12):
                    clients.start_soon(one)
            nursery.cancel_scope.cancel()
        assert len(accepted) == 3 and most == 3, (len(accepted), most, statuses)
        assert statuses == [503] * 9 and d.refusals == {"too_many_clients": 9}
        for c in accepted:
            await c.aclose()
        with trio.fail_after(5):
            while d.connections:
                await trio.sleep(0.01)
        # every slot was given back: by the refused handshakes, and by the closed connections
        accepted = [await RawClient.connect(d.ws_port, ssl_context=client_ctx) for _ in range(3)]
        assert await refused(d.ws_port, ssl_context=client_ctx) == 503
        for c in accepted:
            await c.aclose()


async def test_subscription_limit(daemon_factory):
    async with daemon_factory({"server": {"max_subscriptions": 2}}) as d:
        c = await connect(d)
        await c.send_json({"action": "subscribe", "topics": ["weather", "cameras"]})
        assert (await c.recv_json())["topics"] == ["cameras", "weather"]
        await c.send_json({"action": "subscribe", "topics": ["accidents"]})
        err = await c.recv_json()
        assert err["error"]["code"] == "too_many_subscriptions"
        await c.send_json({"action": "subscribe", "topics": ["weather"]})  # already held: fine
        assert (await c.recv_json())["topics"] == ["cameras", "weather"]
        assert d.hub.counters.subscription_limit == 1
