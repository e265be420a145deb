"""The internal HTTP API (docs/protocol.md section 7): an ASGI app served by hypercorn's trio worker."""
