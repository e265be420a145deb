"""CPU per opening handshake, in process (issue 16 item 2): N browser-like upgrade requests read,
checked and answered, and the open connection's frame layer built, without sockets.

    .venv/bin/python bench/handshake_parse.py [-n 20000] [--deflate] [--impl uipd|h11|both]

``uipd``: what :mod:`uipd.server.handshake` does now (:mod:`uipd.core.upgrade` and a wsproto
``Connection`` built directly).  ``h11``: the path it replaced (wsproto's ``H11Handshake`` over h11,
then the duplicate-header check), kept here as the reference it is measured against.  Reports the
best of 5 rounds in microseconds per handshake (CPU time: the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsproto.connection import Connection, ConnectionType  # noqa: E402
from wsproto.events import AcceptConnection, Request  # noqa: E402
from wsproto.handshake import H11Handshake  # noqa: E402

from uipd.core.upgrade import UNIQUE_HEADERS, RequestReader, UpgradeRequest  # noqa: E402
from uipd.server.deflate import shared  # noqa: E402
from uipd.server.handshake import accept_upgrade  # noqa: E402

# What Chromium sends (its User-Agent and Accept-Language shortened a little).
REQUEST = (
    b"GET /ws?topics=weather,traffic HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\nOrigin: http://localhost:3000\r\nSec-WebSocket-Version: 13\r\nAccept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9,vi;q=0.8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
LIMIT = 65536


def with_h11(deflate: bool) -> tuple[bytes, Connection]:
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.receive_data(REQUEST)
    request = next(e for e in handshake.events() if isinstance(e, Request))
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.extra_headers:
        name = raw_name.decode("latin-1").lower()
        assert not (name in headers and name in UNIQUE_HEADERS)
        headers[name] = raw_value.decode("latin-1")
    if deflate:
        extension = shared(LIMIT)
        accept = AcceptConnection(extensions=[extension])  # type: ignore[list-item]
        answer, _ = extension.negotiate(lambda: handshake.send(accept))
    else:
        answer = handshake.send(AcceptConnection())
    assert handshake.connection is not None
    return answer, handshake.connection


def with_uipd(deflate: bool) -> tuple[bytes, Connection]:
    request = RequestReader().feed(REQUEST)
    assert isinstance(request, UpgradeRequest)
    answer, connection, _ = accept_upgrade(request, shared(LIMIT) if deflate else None)
    return answer, connection


def per_handshake(run, n: int, deflate: bool) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(n):
            run(deflate)
        best = min(best, time.process_time() - started)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000)
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate (Chromium's offer)")
    parser.add_argument("--impl", choices=("uipd", "h11", "both"), default="both")
    args = parser.parse_args()
    assert with_h11(args.deflate)[0] == with_uipd(args.deflate)[0], "the two answers differ"
    for name, run in (("h11", with_h11), ("uipd", with_uipd)):
        if args.impl in (name, "both"):
            print(f"{name:5} {per_handshake(run, args.n, args.deflate):8.1f} us per handshake (deflate={args.deflate})")


if __name__ == "__main__":
    main()
