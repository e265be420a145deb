"""The ``uipd`` command: run, check-config, plugins, --version."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from uipd import __version__
from uipd.config import Config, ConfigError, UnreadableFileError, load

log = logging.getLogger("uipd")

EXIT_CONFIG = 2
"""A wrong config or command line: fix it and try again."""
EXIT_START = 1
"""The config is right but the daemon cannot run here: a port in use, a file it may not read."""
EXIT_INTERRUPTED = 130
"""Stopped at once by a second SIGTERM/SIGINT (or Ctrl-C before the daemon took over signals)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (and exit 2) instead of the usage text and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _stopped_by(exc: BaseException, debug: bool) -> int:
    """One log line and the exit code for what ended ``trio.run``; the traceback only when
    ``[log] level = "debug"``.  trio raises a nursery's errors as an exception group, so the
    cause is looked for inside it, never matched on the group itself."""
    from uipd.daemon import leaves

    errors = [e for e in leaves(exc) if not isinstance(e, KeyboardInterrupt)]
    if not errors:  # Ctrl-C before the daemon's own signal handling was installed
        return EXIT_INTERRUPTED
    first = errors[0]
    if isinstance(first, OSError):  # listening failed: port in use, permission, no such address
        log.error("cannot serve: %s", first, exc_info=exc if debug else None)
    else:
        hint = "" if debug else ' (set [log] level = "debug" for the traceback)'
        log.critical("stopped by an unexpected error: %r%s", first, hint, exc_info=exc if debug else None)
    return EXIT_START


def setup_logging(level: str) -> None:
    """The plain setup (kept for embedding); ``uipd run`` uses :func:`uipd.logs.setup` and ``[log]``."""
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # hypercorn's own info lines duplicate ours
    logging.getLogger("uipd.api.http").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="uipd", description="Real-time pub/sub WebSocket daemon for city data.")
    p.add_argument("--version", action="version", version=f"uipd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default="uipd.toml", help="TOML config file (default: ./uipd.toml)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help='override a config value, in TOML syntax (repeatable), e.g. --set server.port=5002 --set server.welcome=\'"hi"\'',
    )
    check = sub.add_parser("check-config", help="validate a config file and its sources; exit 0 or 2")
    check.add_argument("file", nargs="?", default="uipd.toml")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    sub.add_parser("plugins", help="list the installed source plugins and their source types")
    from uipd.ops import add_commands

    add_commands(sub)
    return p


def _load(path: str, overrides: Sequence[str]) -> Config:
    return load(path, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from uipd import logs, systemd
    from uipd.daemon import Daemon
    from uipd.sources.registry import PluginRegistry

    try:
        config = _load(args.config, args.overrides)
        logs.setup(config.log)
        registry = PluginRegistry.discover()
        daemon = Daemon(
            config, registry, tuple(args.overrides),
            notifier=systemd.Notifier.from_environ(),
            watchdog=systemd.watchdog_period(),
            inherited_fds=systemd.listen_fds(),
        )
    except UnreadableFileError as exc:  # before ConfigError, its base
        print(f"uipd: cannot start: {exc}", file=sys.stderr)
        return EXIT_START
    except ConfigError as exc:
        print(f"uipd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("uipd %s starting with %s; sources: %s", __version__, config.path,
             ", ".join(f"{s.name} ({s.config.plugin})" for s in daemon._configured) or "none")
    try:
        trio.run(daemon.run)
    except BaseException as exc:  # KeyboardInterrupt included: it too may come inside a group
        return _stopped_by(exc, config.log.level == "debug")
    return EXIT_INTERRUPTED if daemon.interrupted else 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from uipd.daemon import Daemon
    from uipd.sources.registry import PluginRegistry

    try:
        config = _load(args.file, args.overrides)
        Daemon(config, PluginRegistry.discover())
    except ConfigError as exc:
        print(f"uipd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{config.path}: ok ({len(config.sources)} source(s))")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from uipd.sources.registry import PluginRegistry

    logging.basicConfig(level=logging.CRITICAL)
    registry = PluginRegistry.discover()
    for name, source_type in sorted(registry.types.items()):
        print(f"{name:12} from {registry.providers[name]:12} {source_type.description}")
    for broken in registry.broken:
        print(f"{broken.name:12} BROKEN: {broken.error}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(args, "handler"):  # the operator commands (uipd.ops): tail, publish, stats
        return int(args.handler(args))
    return {"run": cmd_run, "check-config": cmd_check_config, "plugins": cmd_plugins}[args.command](args)
