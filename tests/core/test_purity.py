"""STYLE rule 1: the protocol core imports nothing from trio, pluggy, sockets or the clock."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import uipd.core

CORE_DIR = Path(uipd.core.__file__).parent
CORE_MODULES = sorted(f"uipd.core.{m.name}" for m in pkgutil.iter_modules([str(CORE_DIR)]))

FORBIDDEN_LOADED = ["trio", "trio_websocket", "pluggy", "hypercorn", "wsproto"]
# `random` is allowed: the hub takes an injected Random for ping jitter and never reads the clock.
FORBIDDEN_IMPORTS = {"time", "socket", "trio", "datetime", "trio_websocket", "pluggy", "hypercorn", "wsproto", "asyncio"}


def test_core_module_list_is_complete() -> None:
    expected = {
        "admission", "assembly", "clock", "closecodes", "counters", "dispatch", "errors", "hub", "liveness", "messages",
        "outbound", "publish", "ratelimit", "routing", "sessions", "settings", "subscriptions", "topics", "wire",
    }
    assert expected <= {m.rsplit(".", 1)[1] for m in CORE_MODULES}


def test_importing_core_loads_no_io_framework() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN_LOADED!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == []


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.add("__import__")
    return roots


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_source_imports_no_clock_or_io(module: str) -> None:
    path = CORE_DIR / (module.rsplit(".", 1)[1] + ".py")
    roots = _imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    assert not roots & FORBIDDEN_IMPORTS
    assert "__import__" not in roots
    assert "importlib" not in roots


def test_ast_check_catches_forbidden_imports() -> None:
    # The checker itself must see every import form.
    src = "import time\nfrom datetime import datetime\nimport trio.lowlevel\ndef f():\n    import socket\n"
    assert _imported_roots(ast.parse(src)) >= {"time", "datetime", "trio", "socket"}
