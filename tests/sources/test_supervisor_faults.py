"""Whatever a source's ``run`` raises, the supervisor restarts it with backoff and logs one line per
failure naming the source; the daemon keeps serving."""

import logging

import trio
from attrs import frozen

from tests.conftest import connect
from uipd.plugin import SourceType, hookimpl


@frozen
class NoOptions:
    pass


FAULTS = [
    KeyError("k"),
    RuntimeError("boom"),
    ExceptionGroup("from the plugin's own nursery", [ConnectionError("upstream gone")]),
    SystemExit(3),  # plugin code calling sys.exit() does not end the daemon
    None,  # run is not a coroutine function: awaiting its result raises TypeError
]


class Faulty:
    topics = ("faulty",)
    runs = 0

    def run(self, publisher):
        Faulty.runs += 1
        if Faulty.runs > len(FAULTS):  # the faults are over: a well-behaved run
            return self._serve(publisher)
        fault = FAULTS[Faulty.runs - 1]
        if fault is None:
            return None
        raise fault

    async def _serve(self, publisher):
        publisher.ready()
        await trio.sleep_forever()


class Plugin:
    @hookimpl
    def uipd_source_types(self):
        return [SourceType("faulty", NoOptions, lambda options: Faulty())]


async def test_every_exception_restarts_the_source_and_logs_one_line_per_failure(daemon_factory, caplog):
    Faulty.runs = 0
    caplog.set_level(logging.DEBUG, logger="uipd.sources.supervisor")
    config = {"sources": {"f": {"plugin": "faulty", "restart_max_backoff": 0.5}}}
    async with daemon_factory(config, plugins=(("faulty", Plugin()),)) as d:
        with trio.fail_after(8):
            while not d.sources[0].ready:
                await trio.sleep(0.05)
        status = d.sources[0]
        assert (status.errors, status.restarts, Faulty.runs) == (5, 5, 6)
        await connect(d)  # still serving
    records = [r for r in caplog.records if r.name == "uipd.sources.supervisor" and r.levelno >= logging.INFO]
    failures = [r for r in records if r.levelno == logging.ERROR]
    assert [r.getMessage().split(")")[0] for r in failures] == [
        "source f failed (KeyError: 'k'",
        "source f failed (RuntimeError: boom",
        "source f failed (ExceptionGroup: from the plugin's own nursery (1 sub-exception",
        "source f failed (SystemExit: 3",
        "source f failed (TypeError: object NoneType can't be used in 'await' expression",
    ]
    # nothing else at info or above per failure: a flapping source costs one line a failure
    assert [r.getMessage() for r in records if r.levelno < logging.ERROR] == ["source f (plugin faulty) starting; topics: faulty"]
