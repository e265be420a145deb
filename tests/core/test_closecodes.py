"""One module of close codes (uipd.core.closecodes): every close uipd decides is there, fits a
close frame, and no other module of the package writes a close code as a bare number."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import uipd
from uipd.core import closecodes
from uipd.core.closecodes import Close

PACKAGE = Path(uipd.__file__).parent


def test_every_close_fits_a_close_frame() -> None:
    for close in closecodes.SENT:
        assert 1000 <= close.code <= 4999 and close.code not in (1004, 1005, 1006, 1015)  # RFC 6455 7.4
        assert close.reason and len(close.reason.encode()) <= 123  # 125 bytes with the 2-byte code


def test_every_named_close_is_listed_and_known_to_the_metrics() -> None:
    named = {name: value for name, value in vars(closecodes).items() if isinstance(value, Close)}
    assert set(named.values()) == set(closecodes.SENT)
    assert {c.code for c in closecodes.SENT} | {closecodes.NORMAL, closecodes.ABNORMAL} == closecodes.KNOWN_CODES


def _bare_close_codes(src: str) -> list[int]:
    """Integer literals passed as the first argument of a ``request_close`` / ``close`` call, or
    assigned to a ``CLOSE_*`` name."""
    found = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("request_close", "close"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int):
                found.append(node.args[0].value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, int):
            if any(isinstance(t, ast.Name) and t.id.startswith("CLOSE_") for t in node.targets):
                found.append(node.value.value)
    return found


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "closecodes.py"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_close_code_is_written_outside_closecodes(path: Path) -> None:
    assert _bare_close_codes(path.read_text(encoding="utf-8")) == []


def test_the_check_sees_bare_codes() -> None:
    src = "CLOSE_X = 1003\nq.request_close(1001, 'going away', flush=True)\nawait t.close(1011, 'x')\n"
    assert sorted(_bare_close_codes(src)) == [1001, 1003, 1011]
