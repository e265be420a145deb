"""The trio shell: listeners, client connections, the heartbeat supervisor and the daemon's lifetime.

This package moves bytes and owns lifetimes; every protocol decision is taken by ``uipd.core``.
"""
