"""The internal HTTP API (PROTOCOL.md section 7): an ASGI app served by hypercorn's trio worker."""
