"""``uipd publish`` against a running daemon: data from the argument, a file or stdin; one clear
line on a wrong key, port, topic or JSON."""

from __future__ import annotations

import json

from tests.cli.support import CONFIG, KEY, TOKEN, one_line_failure, uipd
from tests.conftest import connect
from tests.runtime.support import free_port


async def test_publish_from_argument_file_and_stdin(daemon_factory, tmp_path):
    async with daemon_factory(CONFIG) as d:
        client = await connect(d, f"/?token={TOKEN}")
        api = ["--api", f"http://127.0.0.1:{d.api_port}", "--key", KEY]
        r = await uipd("publish", "--topic", "accidents", "--alert", *api, '{"message": "crash on Le Loi"}')
        assert r.returncode == 0, r.stderr
        assert r.stdout.decode().strip() == "published ALERT to accidents: seq 1, 1 recipient(s)"
        msg = await client.recv_json()
        assert msg["type"] == "ALERT" and msg["data"] == {"message": "crash on Le Loi"} and msg["seq"] == 1

        data = tmp_path / "cams.json"
        data.write_text(json.dumps([{"id": "c1", "status": "ok"}, {"id": "c2", "status": "down"}]))
        r = await uipd("publish", "-t", "cameras", *api, f"@{data}")
        assert r.returncode == 0, r.stderr
        msg = await client.recv_json()
        assert msg["type"] == "UPDATE" and msg["topic"] == "cameras" and len(msg["data"]) == 2

        r = await uipd("publish", "-t", "cameras", "--removed", "c2", *api, "-", stdin=b'{"id": "c1", "status": "slow"}')
        assert r.returncode == 0, r.stderr
        msg = await client.recv_json()
        assert msg["data"] == [{"id": "c1", "status": "slow"}] and msg["removed"] == ["c2"]

        one_line_failure(await uipd("publish", "-t", "accidents", "--api", api[1], "--key", "wrong", "{}"), "publish", "401")
        one_line_failure(await uipd("publish", "-t", "accidents", "--api", f"http://127.0.0.1:{free_port()}", "{}"), "publish", "cannot connect")
        one_line_failure(await uipd("publish", "-t", "nope", *api, "[]"), "publish", "404")
        one_line_failure(await uipd("publish", "-t", "cameras", *api, "{not json"), "publish", "not valid JSON", status=2)
        await client.aclose()


async def test_data_uipd_cannot_take_is_one_line_and_exit_2(daemon_factory, tmp_path):
    """NaN, a number past a double, bytes that are not UTF-8 (file, stdin or argument) or nesting
    past the decoder: a usage error, never the HTTP client's traceback, and nothing is sent."""
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'[{"id": "c1", "street": "L\xea L\xf3i"}]')
    async with daemon_factory(CONFIG) as d:
        api = ["--api", f"http://127.0.0.1:{d.api_port}", "--key", KEY]
        for data, stdin, needle in (
            ('[{"id": 1, "v": NaN}]', None, "NaN"),
            ('[{"id": 1, "v": 1e400}]', None, "JSON"),
            (f"@{latin1}", None, "not UTF-8"),
            ("-", b"\xff\xfe", "not UTF-8"),
            (b'[{"id": "\xff"}]', None, "not UTF-8"),
            ("[" * 100_000, None, "not valid JSON"),
        ):
            one_line_failure(await uipd("publish", "-t", "cameras", *api, data, stdin=stdin), "publish", needle, status=2)
        assert d.hub.topics.get("cameras").seq == 0
