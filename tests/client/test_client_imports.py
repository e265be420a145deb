"""The Python client is small: importing it loads neither the daemon's config (cattrs) nor pluggy
(its ``Backoff`` is :mod:`uipd.core.backoff`, re-exported by ``uipd.client`` and ``uipd.plugin_tools``)."""

from __future__ import annotations

import json
import subprocess
import sys

from uipd.client import Backoff
from uipd.core.backoff import Backoff as CoreBackoff
from uipd.plugin_tools import Backoff as PluginBackoff


def test_importing_the_client_loads_no_config_and_no_pluggy() -> None:
    code = "import json, sys, uipd.client; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout))
    assert "uipd.client" in loaded
    assert not {"uipd.config", "uipd.plugin_tools", "pluggy", "cattrs"} & loaded


def test_one_backoff_under_three_names() -> None:
    assert Backoff is CoreBackoff is PluginBackoff
    waits = Backoff(0.5, 2.0)
    assert [waits.next() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
