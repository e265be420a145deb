"""The sans-IO protocol core of uipd.

Nothing in this package does I/O, reads a clock or imports trio: the shell passes in
the current time (:class:`~uipd.core.clock.Instant`) and gets back bytes to send and
decisions to carry out.  Every rule of docs/protocol.md sections 2-5 lives here.
"""
