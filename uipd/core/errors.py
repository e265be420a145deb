"""Errors that carry what the shell needs to answer them: an ERROR code, a close code or an HTTP status."""

from __future__ import annotations

from collections.abc import Sequence


class ClientError(Exception):
    """A client message the server answers with an ``ERROR`` frame; the connection stays."""

    def __init__(self, code: str, message: str, *, topics: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.error_code = code
        self.message = message
        self.topics = tuple(topics)


class PublishError(ValueError):
    """A publish (HTTP API body or a source's call) that is rejected; nothing was published."""

    def __init__(self, code: str, message: str, *, http_status: int = 400) -> None:
        super().__init__(message)
        self.error_code = code
        self.message = message
        self.http_status = http_status


class UnknownTopic(PublishError):
    def __init__(self, topic: str) -> None:
        super().__init__("unknown_topic", f"unknown topic: {topic}", http_status=404)
        self.topic = topic
