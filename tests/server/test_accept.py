"""The accept loop (uipd.server.accept) when the daemon runs out of file descriptors.

A real ``uipd run`` subprocess whose descriptor limit is lowered (RLIMIT_NOFILE) so that about a
hundred connections reach it: trio's serve_listeners logged a traceback every 100 ms and retried
at that pace; the accept loop logs one line per episode, backs off, and takes the connections
waiting in the backlog once descriptors free up.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.runtime.support import Uipd, free_port, wait_ready, write_config
from tests.server.test_connection_edges import handshake_bytes
from uipd.server.accept import AcceptEpisode

LIMIT = 96
"""The daemon's soft descriptor limit: what it opens at start leaves room for some 60-80 clients."""


def _lower_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, hard))


def open_client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(handshake_bytes(port))
    return sock


def answered(sock: socket.socket, timeout: float) -> bool:
    """True once the 101 arrived; False if nothing came within ``timeout``."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return False
    assert data.startswith(b"HTTP/1.1 101"), data[:60]
    return True


def wait_for(lines: list[str], text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines):
        assert time.monotonic() < deadline, f"no {text!r} logged; got {lines[-5:]}"
        time.sleep(0.02)


def start_daemon(tmp_path: Path) -> tuple[Uipd, list[str], int, int]:
    """A daemon with few descriptors, backing off 0.02 s doubling to 0.2 s, and its stderr lines."""
    ws, api = free_port(), free_port()
    config = write_config(tmp_path / "uipd.toml", {
        "server": {"host": "127.0.0.1", "port": ws, "topics": ["accidents"], "accept_backoff": 0.02, "accept_backoff_max": 0.2},
        "api": {"port": api, "dashboard": False},
    })
    daemon = Uipd(config, preexec_fn=_lower_fd_limit)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(daemon.proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_ready(f"http://127.0.0.1:{api}")
    except BaseException:
        daemon.stop()
        raise
    return daemon, lines, ws, api


def fill_descriptors(ws: int) -> tuple[list[socket.socket], socket.socket]:
    """Connect WebSocket clients until the daemon cannot take one more: those it took, and the one
    left in the listen backlog."""
    clients: list[socket.socket] = []
    while True:
        clients.append(open_client(ws))
        if not answered(clients[-1], timeout=0.5):
            return clients[:-1], clients[-1]
        assert len(clients) < LIMIT, "the descriptor limit was never reached"


def test_an_episode_doubles_its_wait_up_to_the_cap_and_logs_twice(caplog) -> None:
    caplog.set_level(logging.INFO, logger="uipd.server.accept")
    episode = AcceptEpisode()
    full = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    assert [episode.failed(full, 0.05, 1.0, clock=t) for t in range(7)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    episode.succeeded(clock=10.0)
    episode.succeeded(clock=11.0)
    assert episode.failed(OSError(errno.ENOBUFS, "no buffers"), 0.05, 1.0, clock=20.0) == 0.05  # a new episode starts over
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0].startswith("out of file descriptors: accept() failed with EMFILE") and "backing off" in messages[0]
    assert messages[1] == "accepting connections again after 10.0 s (7 failed accepts)"
    assert messages[2].startswith("out of socket buffers: accept() failed with ENOBUFS")


def test_out_of_descriptors_is_logged_once_backs_off_and_recovers(tmp_path: Path) -> None:
    daemon, lines, ws, api = start_daemon(tmp_path)
    clients: list[socket.socket] = []
    try:
        clients, first = fill_descriptors(ws)
        waiting = [first] + [open_client(ws) for _ in range(4)]  # left in the listen backlog
        wait_for(lines, "out of file descriptors")
        # Some retries (0.02 s doubling to 0.2 s: 6 in 0.6 s); trio logged a traceback every 100 ms.
        time.sleep(0.6)
        episode = [line for line in lines if "out of file descriptors" in line]
        assert len(episode) == 1, episode
        assert "EMFILE" in episode[0] and "backing off" in episode[0]
        assert not any("Traceback" in line for line in lines), lines[-20:]
        assert not any(answered(sock, timeout=0.01) for sock in waiting)

        for sock in clients[:20]:  # free some descriptors: the waiting clients are taken
            sock.close()
        del clients[:20]
        wait_for(lines, "accepting connections again")
        assert all(answered(sock, timeout=5.0) for sock in waiting)
        clients += waiting
        fresh = open_client(ws)
        clients.append(fresh)
        assert answered(fresh, timeout=5.0)
        assert httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=5).status_code == 200
        assert sum("out of file descriptors" in line for line in lines) == 1
        assert sum("accepting connections again" in line for line in lines) == 1
    finally:
        for sock in clients:
            sock.close()
        code, _ = daemon.stop()
    assert code == 0


def api_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    return sock


def api_answer(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return b""


def test_the_api_listener_backs_off_in_the_same_episode_and_recovers(tmp_path: Path) -> None:
    """hypercorn accepted with trio's serve_listeners: a traceback every 100 ms while descriptors
    were out, on the API listener too.  It shares the WebSocket listener's accept loop and episode."""
    daemon, lines, ws, api = start_daemon(tmp_path)
    clients: list[socket.socket] = []
    try:
        clients, waiting = fill_descriptors(ws)
        clients.append(waiting)
        wait_for(lines, "out of file descriptors")
        requests = [api_request(api) for _ in range(3)]  # in the API listener's backlog
        clients += requests
        time.sleep(0.6)  # retries of both listeners (0.02 s doubling to 0.2 s)
        assert not any(api_answer(sock, timeout=0.01) for sock in requests)
        assert sum("out of file descriptors" in line for line in lines) == 1, lines[-10:]
        assert not any("Traceback" in line or "EMFILE" in line and "accept() failed" not in line for line in lines), lines[-20:]

        for sock in clients[:20]:  # free some descriptors: the waiting API requests are answered
            sock.close()
        del clients[:20]
        assert all(api_answer(sock, timeout=5.0).startswith(b"HTTP/1.1 200") for sock in requests)
        assert httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=5).status_code == 200
        wait_for(lines, "accepting connections again")
        assert sum("accepting connections again" in line for line in lines) == 1
        assert not any("Traceback" in line for line in lines), lines[-20:]
    finally:
        for sock in clients:
            sock.close()
        code, _ = daemon.stop()
    assert code == 0
