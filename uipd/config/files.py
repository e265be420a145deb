"""Files a configuration names (token and key files, the TLS certificate and key): read, and so
checked, when the configuration is loaded, with errors that name the file and the key."""

from __future__ import annotations

import ssl
from pathlib import Path

from uipd.config.errors import ConfigError, UnreadableFileError
from uipd.config.model import ServerConfig


def read_named_file(path: str, *, file: str, key: str) -> str:
    """The text of a file named by config key ``key`` of ``file``; errors name both."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: {key}: {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise UnreadableFileError(f"{file}: {key}: cannot read {path}: {exc.strerror or exc}") from None


def tls_context(server: ServerConfig, *, file: str) -> ssl.SSLContext | None:
    """The listener's TLS context when ``tls_cert`` is set: loaded (and so checked) with the config,
    not when the listener opens, so ``uipd check-config`` finds a bad certificate or key."""
    if not server.tls_cert:
        return None
    for key in ("tls_cert", "tls_key"):  # readable first, so the message says which one is not
        read_named_file(getattr(server, key), file=file, key=f"server.{key}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except ssl.SSLError as exc:  # before OSError: SSLError is one
        raise ConfigError(f"{file}: server.tls_cert, server.tls_key: not a PEM certificate chain and its private key: {exc.reason or exc}") from None
    except OSError as exc:
        raise UnreadableFileError(f"{file}: server.tls_cert, server.tls_key: cannot load: {exc.strerror or exc}") from None
    return context
