"""A small JSONPath subset for picking the entity list out of a document.

Supported: ``$`` (the root), ``.name`` and ``['name']`` (a key), ``[N]`` (an index, negative from
the end), ``[*]`` and ``.*`` (every element or value).  That covers the shapes feeds use
(``$.data.items[*]``, ``$.features``, ``$['result']['records']``) without a dependency; filters
and recursive descent are refused when the option is loaded, not at run time.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import frozen

_TOKEN = re.compile(
    r"""\.(?P<name>[A-Za-z_$@][\w$@-]*)   # .name
      | \.\*(?P<dotstar>)                 # .*
      | \[\s*\*\s*\](?P<star>)            # [*]
      | \[\s*(?P<index>-?\d+)\s*\]        # [3]
      | \[\s*'(?P<q1>[^']*)'\s*\]         # ['name']
      | \[\s*"(?P<q2>[^"]*)"\s*\]         # ["name"]
    """,
    re.VERBOSE,
)

WILDCARD = object()
"""The step ``[*]``: every element of a list or every value of an object."""


@frozen
class Selector:
    """A parsed selector: the steps after ``$``."""

    text: str
    steps: tuple[str | int | object, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``text``; raise ValueError naming the position of anything unsupported."""
        s = text.strip()
        if not s.startswith("$"):
            raise ValueError(f"a selector starts with '$', got {text!r}")
        steps: list[str | int | object] = []
        pos = 1
        while pos < len(s):
            m = _TOKEN.match(s, pos)
            if m is None:
                raise ValueError(f"unsupported selector syntax at {s[pos:]!r} in {text!r} (use .name, ['name'], [N], [*])")
            if m.group("name") is not None:
                steps.append(m.group("name"))
            elif m.group("index") is not None:
                steps.append(int(m.group("index")))
            elif m.group("q1") is not None or m.group("q2") is not None:
                steps.append(m.group("q1") if m.group("q1") is not None else m.group("q2"))
            else:
                steps.append(WILDCARD)
            pos = m.end()
        return cls(text, tuple(steps))

    def select(self, document: Any) -> list[Any]:
        """Every value the selector reaches (missing keys and wrong shapes reach nothing)."""
        current = [document]
        for step in self.steps:
            out: list[Any] = []
            for node in current:
                if step is WILDCARD:
                    if isinstance(node, list):
                        out.extend(node)
                    elif isinstance(node, dict):
                        out.extend(node.values())
                elif isinstance(step, int):
                    if isinstance(node, list) and -len(node) <= step < len(node):
                        out.append(node[step])
                elif isinstance(node, dict) and step in node:
                    out.append(node[step])
            current = out
        return current

    def entities(self, document: Any) -> list[Any]:
        """The entity list: what the selector reaches, where one reached list stands for its elements
        (so ``$.items`` and ``$.items[*]`` mean the same)."""
        found = self.select(document)
        if len(found) == 1 and isinstance(found[0], list):
            return list(found[0])
        return found
