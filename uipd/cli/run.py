"""``uipd run``, ``uipd check-config`` and ``uipd plugins``: the daemon, its config, its plugins.

The daemon's modules are imported inside the handlers: they take half a second to import, which
``uipd tail``, ``publish``, ``stats`` and ``--version`` should not pay."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import trio

from uipd import __version__
from uipd.cli import hangups
from uipd.cli.common import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_START
from uipd.config import ConfigError, UnreadableFileError, load

log = logging.getLogger("uipd")


def add_run_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", default="uipd.toml", help="TOML config file (default: ./uipd.toml)")
    run.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help='override a config value, in TOML syntax (repeatable), e.g. --set server.port=5002 --set server.welcome=\'"hi"\'',
    )
    run.add_argument(
        "--workers", type=int, metavar="N",
        help="processes serving the ports, each a node of the Redis broker (as --set server.workers=N; see [server] workers)",
    )
    run.set_defaults(handler=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file and its sources; exit 0 or 2")
    check.add_argument("file", nargs="?", default="uipd.toml")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    check.set_defaults(handler=cmd_check_config)
    plugins = sub.add_parser("plugins", help="list the installed source plugins and their source types")
    plugins.set_defaults(handler=cmd_plugins)


def _stopped_by(exc: BaseException, debug: bool) -> int:
    """One log line and the exit code for what ended ``trio.run``; the traceback only when
    ``[log] level = "debug"``.  trio raises a nursery's errors as an exception group, so the
    cause is looked for inside it, never matched on the group itself."""
    from uipd.runtime.daemon import leaves

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


def cmd_run(args: argparse.Namespace) -> int:
    hangups.defer()  # again, for a caller of command.main that came past uipd.cli.main
    from uipd.runtime import logs, systemd, workers
    from uipd.runtime.daemon import Daemon
    from uipd.runtime.group import WorkerGroup
    from uipd.sources.registry import PluginRegistry

    if args.workers is not None:
        args.overrides = [*args.overrides, f"server.workers={args.workers}"]
    index = workers.worker_index()  # set by the supervisor of a group of workers
    try:
        config = load(args.config, args.overrides)
        logs.setup(config.log)
        registry = PluginRegistry.discover()
        if index is None and config.server.workers > 1:
            return _run_supervisor(args, config, registry)
        daemon = Daemon(
            config, registry, tuple(args.overrides),
            notifier=systemd.Notifier.from_environ(),
            watchdog=systemd.watchdog_period(),
            inherited_fds=systemd.listen_fds() if index is None else workers.worker_fds(),
            hangup_before_start=hangups.received,
            manage_gc=True,
            group=None if index is None else WorkerGroup(os.environ.get(workers.GROUP_ENV, ""), index),
        )
    except UnreadableFileError as exc:  # before ConfigError, its base
        print(f"uipd: cannot start: {exc}", file=sys.stderr)
        return EXIT_START
    except ConfigError as exc:
        print(f"uipd: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.info("uipd %s starting with %s; sources: %s", __version__, config.path,
             ", ".join(f"{s.name} ({s.config.plugin})" for s in daemon.configured_sources) or "none")
    try:
        trio.run(daemon.run)
    except BaseException as exc:  # KeyboardInterrupt included: it too may come inside a group
        return _stopped_by(exc, config.log.level == "debug")
    return EXIT_INTERRUPTED if daemon.interrupted else 0


def _run_supervisor(args: argparse.Namespace, config: Any, registry: Any) -> int:
    """``[server] workers`` > 1: this process supervises the workers (uipd.runtime.workers)."""
    from uipd.runtime import systemd
    from uipd.runtime.workers import Supervisor
    from uipd.sources.registry import check_config

    check_config(config, registry)  # a config error: exit 2 here, once, not from every worker
    supervisor = Supervisor(
        config, tuple(args.overrides), notifier=systemd.Notifier.from_environ(), watchdog=systemd.watchdog_period(),
        inherited_fds=systemd.listen_fds(), hangup_before_start=hangups.received,
    )
    try:
        supervisor.bind()
    except OSError as exc:
        log.error("cannot serve: %s", exc)
        return EXIT_START
    ws_port, api_port = supervisor.ports
    log.info("uipd %s starting %d workers with %s (node ids %s-w0..): WebSocket %s:%d, HTTP API %s:%d", __version__,
             config.server.workers, config.path, supervisor.group, config.server.host, ws_port, config.api.host, api_port)
    try:
        return trio.run(supervisor.run)
    except BaseException as exc:
        return _stopped_by(exc, config.log.level == "debug")


def cmd_check_config(args: argparse.Namespace) -> int:
    from uipd.runtime.daemon import Daemon
    from uipd.sources.registry import PluginRegistry

    try:
        config = load(args.file, args.overrides)
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
