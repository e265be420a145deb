"""The errors of loading a configuration."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key path."""


class UnreadableFileError(ConfigError):
    """A file the configuration names cannot be read (missing, permissions).  ``uipd run`` treats it
    as a start failure of this machine (exit 1), not a wrong config (exit 2): the same file may be
    readable by the service's user and not by whoever ran the check, or the other way round."""
