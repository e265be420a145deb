"""The configuration: one frozen attrs tree (:mod:`.model`), loaded from TOML (:mod:`.load`) by one
strict cattrs converter (:mod:`.convert`); files it names are read at load (:mod:`.files`).

Strict means: a wrong type is an error, never a coercion ("5000" is not a port, "all" is not a
list), an unknown key is an error, and every error names the file and the key path.
"""

from uipd.config.convert import structure_strict
from uipd.config.errors import ConfigError, UnreadableFileError
from uipd.config.files import read_named_file, tls_context
from uipd.config.load import from_dict, load
from uipd.config.model import (
    AuthConfig, BrokerConfig, Config, LogConfig, ServerConfig, SourceConfig, non_negative, positive,
)

__all__ = [
    "AuthConfig", "BrokerConfig", "Config", "ConfigError", "LogConfig", "ServerConfig", "SourceConfig",
    "UnreadableFileError", "from_dict", "load", "non_negative", "positive", "read_named_file", "structure_strict", "tls_context",
]
