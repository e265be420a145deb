"""``uipd stats`` against a running daemon: a table (or the JSON), one clear line on a wrong key or port."""

from __future__ import annotations

import json

from tests.cli.support import CONFIG, KEY, TOKEN, one_line_failure, uipd
from tests.conftest import connect
from tests.runtime.support import free_port


async def test_stats_prints_a_table(daemon_factory):
    async with daemon_factory(CONFIG) as d:
        client = await connect(d, f"/?token={TOKEN}")
        api = f"http://127.0.0.1:{d.api_port}"
        r = await uipd("stats", "--api", api, "--key", KEY)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode().splitlines()
        assert out[0] == "clients: 1"
        header = out[2].split()
        assert header == ["topic", "subscribers", "entities", "seq"]
        rows = {line.split()[0]: line.split()[1:] for line in out[3:] if line.strip()}
        assert rows["accidents"] == ["1", "0", "0"]
        r = await uipd("stats", "--api", api, "--key", KEY, "--json")
        assert json.loads(r.stdout)["clients"] == 1
        await client.aclose()

        one_line_failure(await uipd("stats", "--api", api, "--key", "wrong"), "stats", "401")
        one_line_failure(await uipd("stats", "--api", api), "stats", "401")
        one_line_failure(await uipd("stats", "--api", f"http://127.0.0.1:{free_port()}", "--key", KEY), "stats", "cannot connect")
