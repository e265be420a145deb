"""Where to reach a listener from this host, given the address it is bound to."""

from __future__ import annotations


def reachable(host: str) -> str:
    """The loopback address of a wildcard bind (``0.0.0.0``, ``""``: IPv4; ``::``: IPv6), else
    ``host`` itself: a client on this host cannot connect to a wildcard address."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host
