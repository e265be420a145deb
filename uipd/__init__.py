"""uipd: a real-time pub/sub WebSocket daemon for city data."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("uipd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
