"""The runtime: what runs the sans-IO core and the trio shell as one daemon.

:mod:`~uipd.runtime.daemon` owns the nursery and the lifetime (start, drain, signals);
:mod:`~uipd.runtime.sources` the source lifecycle, :mod:`~uipd.runtime.connections` the client
connections (admission, slots, per-IP counts); :mod:`~uipd.runtime.reload` applies a new config
(SIGHUP), :mod:`~uipd.runtime.metrics` serves ``/metrics``, :mod:`~uipd.runtime.systemd` talks to
systemd, :mod:`~uipd.runtime.logs` sets logging up and :mod:`~uipd.runtime.auth` checks the
credentials of a handshake; :mod:`~uipd.runtime.workers` supervises ``[server] workers`` processes,
and :mod:`~uipd.runtime.group` makes a worker's stats the whole group's."""
