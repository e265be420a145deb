"""The trio shell of the WebSocket side: the accept loop (``accept``), the opening handshake
(``handshake``), each client's connection (``connection``: its receive loop; ``writer``: its
writes and close), the shared write pass (``flusher``), the heartbeat driver (``heartbeat``), the
socket layer (``transport``) and the clock (``clock``).  The daemon's nursery and lifetime are
:mod:`uipd.runtime`'s.

This package moves bytes and owns lifetimes; every protocol decision is taken by ``uipd.core``.
"""
