"""Who may connect (PROTOCOL.md section 6): static tokens or JWT (HS256/RS256), checked at the handshake.

The result is an :class:`Identity`: which topics the client may subscribe to (a JWT ``topics``
claim) and when its credentials expire (a JWT ``exp``), so the core can refuse a subscribe
(``ERROR forbidden``) and close the connection when the token runs out.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs

import jwt
from attrs import frozen
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import get_default_algorithms

from uipd.config import AuthConfig, ConfigError, read_named_file


@frozen
class Identity:
    subject: str | None = None
    topics: frozenset[str] | None = None
    """The topics this client may subscribe to; None: every topic."""
    expires_at: float | None = None
    """Unix time at which the credentials expire; None: never."""


ANONYMOUS = Identity()


class AuthError(Exception):
    """The handshake is refused with HTTP 401; the message says why (logged, not sent)."""


class Authenticator(Protocol):
    def authenticate(self, token: str | None, now: float) -> Identity: ...


def token_from(target: str, headers: Mapping[str, str]) -> str | None:
    """The token of a handshake: ``Authorization: Bearer ...`` or ``?token=...`` in the URL."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    _, _, query = target.partition("?")
    if "token=" not in query:
        return None  # not unquoted: a recovering client's URL carries a long since= (a storm's main cost)
    values = parse_qs(query).get("token")
    return values[0] if values else None


class NoAuth:
    def authenticate(self, token: str | None, now: float) -> Identity:
        return ANONYMOUS


class TokenAuth:
    """Static tokens: compared in constant time."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = [t.encode() for t in tokens]

    def authenticate(self, token: str | None, now: float) -> Identity:
        if token is None:
            raise AuthError("no token")
        given = token.encode()
        # compare with every token so the time taken does not tell which one nearly matched
        if not any([hmac.compare_digest(given, t) for t in self._tokens]):
            raise AuthError("unknown token")
        return ANONYMOUS


class JwtAuth:
    def __init__(self, key: Any, algorithm: str, leeway: float, audience: str, issuer: str) -> None:
        """``key``: the parsed key (see :func:`make_authenticator`), not parsed again per handshake."""
        self._key = key
        self._algorithm = algorithm
        self._leeway = leeway
        self._audience = audience or None
        self._issuer = issuer or None

    def authenticate(self, token: str | None, now: float) -> Identity:
        if token is None:
            raise AuthError("no token")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._algorithm],
                leeway=self._leeway,
                audience=self._audience,
                issuer=self._issuer,
            )
        # PyJWT checks exp and nbf with int(claim): a claim of Infinity is an OverflowError, not a
        # PyJWTError; the signature is good by then, but the claims are still the client's
        except (jwt.PyJWTError, ValueError, OverflowError, TypeError) as exc:
            raise AuthError(f"invalid JWT: {exc}") from None
        topics = claims.get("topics")
        if topics is not None and not (isinstance(topics, list) and all(isinstance(t, str) for t in topics)):
            raise AuthError("invalid JWT: the topics claim must be a list of strings")
        _time_claim(claims, "nbf")  # only checked: PyJWT already compared it with the clock
        exp = _time_claim(claims, "exp")
        return Identity(
            subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
            topics=frozenset(topics) if topics is not None else None,
            expires_at=exp + self._leeway if exp is not None else None,
        )


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim as a float; AuthError unless it is a finite number that a float holds
    (PyJWT takes "123" and 10**400, which would make the expiry None or an OverflowError)."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AuthError(f"invalid JWT: the {name} claim must be a number")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise AuthError(f"invalid JWT: the {name} claim is out of range")
    return seconds


def _jwt_key(config: AuthConfig, file: str) -> Any:
    """The JWT verification key, parsed now: a key that cannot verify anything is a config error
    at load time, not an HTTP 401 for every client (logged per handshake at info)."""
    key_name = "auth.jwt_key_file" if config.jwt_key_file else "auth.jwt_key"
    key = read_named_file(config.jwt_key_file, file=file, key=key_name) if config.jwt_key_file else config.jwt_key
    if not key.strip():
        raise ConfigError(f'{file}: {key_name}: mode = "jwt" needs jwt_key or jwt_key_file (the key is empty)')
    try:
        prepared = get_default_algorithms()[config.jwt_algorithm].prepare_key(key.strip() if config.jwt_algorithm == "RS256" else key)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        what = "an RSA public key (PEM)" if config.jwt_algorithm == "RS256" else "an HS256 secret (not a public key)"
        raise ConfigError(f"{file}: {key_name}: expected {what}: {exc}") from None
    if config.jwt_algorithm == "RS256" and not isinstance(prepared, RSAPublicKey):
        # a private key parses, but verifying with it fails for every token
        raise ConfigError(f"{file}: {key_name}: expected an RSA public key (PEM), got a private key")
    return prepared


def make_authenticator(config: AuthConfig, file: str = "<config>") -> Authenticator:
    """Build the authenticator, reading and parsing its files now; errors name ``file`` and the key."""
    if config.mode == "none":
        return NoAuth()
    if config.mode == "token":
        tokens = list(config.tokens)
        if config.token_file:
            lines = read_named_file(config.token_file, file=file, key="auth.token_file").splitlines()
            tokens += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not tokens:
            raise ConfigError(f'{file}: auth.tokens: mode = "token" needs tokens or a token_file with at least one token')
        return TokenAuth(tokens)
    return JwtAuth(_jwt_key(config, file), config.jwt_algorithm, config.jwt_leeway, config.jwt_audience, config.jwt_issuer)
