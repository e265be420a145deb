"""permessage-deflate in the shell (PROTOCOL.md section 9): negotiation, inbound inflating, and
compressing each outgoing message once for every client that negotiated it.

wsproto's own ``PerMessageDeflate`` is not used: it inflates without a bound (a zip bomb), keeps
zlib state per connection, and its compressor would run per frame per client, where our frames are
built once and shared (mixing its context-taking-over stream with shared frames corrupts it).
:class:`DeflateExtension` is the object wsproto's handshake and frame parser call, written for
the server side only; the compression itself is :mod:`uipd.core.compression`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import parse_qs

import trio
from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from uipd.core.compression import BoundedInflater, Frame, InflateError, MessageTooBig, WINDOW_BITS, build_variant
from uipd.server.clock import cpu_time

ANSWER = "server_no_context_takeover; client_no_context_takeover"
"""Our answer's parameters: each message is compressed on its own (the same bytes for everyone),
and the client must do the same (an inbound message needs no state kept from the one before)."""

OFF_LOOP_BYTES = 64 * 1024
"""Frames larger than this are compressed in a worker thread (zlib releases the GIL): the city
snapshot takes ~8 ms at level 1, which would stall every other client's fan-out."""

_RSV1 = RsvBits(True, False, False)


def client_declines(target: str) -> bool:
    """``?compress=0`` (or ``false``) on the handshake's URL: this client wants plain frames."""
    _, _, query = target.partition("?")
    if "compress=" not in query:
        return False
    return any(v.strip().lower() in ("0", "false", "no") for v in parse_qs(query).get("compress", ()))


def answer_offer(offer: str) -> str | None:
    """Our answer's parameters to one ``permessage-deflate`` offer, or None to decline it (RFC
    7692 section 7.1): a parameter we do not know, one given twice, a bad value, or a server
    window below ours (we compress with 2^15 for everyone)."""
    seen: set[str] = set()
    answer = ANSWER
    for part in offer.split(";")[1:]:
        name, eq, value = (p.strip() for p in part.partition("="))
        value = value.strip('"')
        if not name or name in seen:
            return None
        seen.add(name)
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if eq:
                return None
        elif name == "server_max_window_bits":
            if not value.isdigit() or int(value) != WINDOW_BITS:
                return None  # a window below 2^15 we cannot honour (9-14), or not a window size
            answer += "; server_max_window_bits=15"  # an offered parameter must be answered
        elif name == "client_max_window_bits":
            # The client may use any window: our inflater takes up to 2^15 (no answer needed).
            if eq and not (value.isdigit() and 8 <= int(value) <= 15):
                return None
        else:
            return None
    return answer


class DeflateExtension:
    """What wsproto calls for ``permessage-deflate`` on server connections: the handshake's
    ``accept`` and the frame parser's inbound hooks.  Outgoing frames never pass through it (our
    frames are written as they are; wsproto only frames pongs and close frames, never compressed).

    One object serves every connection with the same bound (``shared``), so negotiating costs an
    idle connection nothing: the negotiation's state lives only during the handshake's
    synchronous ``send`` (``negotiate``), and an inflater exists only while a compressed message
    is being received, kept on that connection's frame decoder and bounded by ``limit``
    (``max_message_bytes``): past it, close 1009."""

    __slots__ = ("limit", "_accepted")
    name = "permessage-deflate"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._accepted = False

    def negotiate(self, send: Callable[[], bytes]) -> tuple[bytes, bool]:
        """Run the handshake's ``send`` (which calls ``accept`` for each offer, then ``enabled``
        as wsproto builds the connection): what it returned, and whether we accepted an offer."""
        self._accepted = False
        try:
            data = send()
            return data, self._accepted
        finally:
            self._accepted = False

    def enabled(self) -> bool:
        return self._accepted

    def offer(self) -> bool | str:  # pragma: no cover - the client side; we only serve
        raise NotImplementedError

    def accept(self, offer: str) -> str | None:
        """Called for each ``permessage-deflate`` offer in the client's order: the first we can
        honour is accepted (the others are alternatives, RFC 7692 section 5)."""
        if self._accepted:
            return None
        answer = answer_offer(offer)
        self._accepted = answer is not None
        return answer

    def finalize(self, offer: str) -> None:  # pragma: no cover - the client side
        raise NotImplementedError

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        if opcode.iscontrol() or opcode is Opcode.CONTINUATION:
            if rsv.rsv1:  # RFC 7692 section 6: only a message's first frame says "compressed"
                return CloseReason.PROTOCOL_ERROR
        elif rsv.rsv1:
            proto.uipd_inflater = BoundedInflater(self.limit)  # type: ignore[union-attr]
        elif getattr(proto, _INFLATER, None) is not None:
            proto.uipd_inflater = None  # type: ignore[union-attr]
        return _RSV1

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        inflater: BoundedInflater | None = getattr(proto, _INFLATER, None)
        if inflater is None or _control(proto):
            return data
        try:
            return inflater.feed(data)
        except MessageTooBig:
            proto.uipd_inflater = None  # type: ignore[union-attr]
            return CloseReason.MESSAGE_TOO_BIG
        except InflateError:
            proto.uipd_inflater = None  # type: ignore[union-attr]
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        inflater: BoundedInflater | None = getattr(proto, _INFLATER, None)
        if inflater is None or not fin or _control(proto):
            return None
        proto.uipd_inflater = None  # type: ignore[union-attr]
        try:
            return inflater.finish()
        except MessageTooBig:
            return CloseReason.MESSAGE_TOO_BIG
        except InflateError:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        return rsv, data


Extension.register(DeflateExtension)

_INFLATER = "uipd_inflater"
"""The attribute of a connection's wsproto frame decoder holding the inflater of the compressed
message being received (set only then: a connection that never sends one never has it)."""

_shared: dict[int, DeflateExtension] = {}


def shared(limit: int) -> DeflateExtension:
    """The extension object for connections whose messages are bounded by ``limit``."""
    extension = _shared.get(limit)
    if extension is None:
        if len(_shared) > 16:  # reloads with ever new bounds: keep a few
            _shared.clear()
        extension = _shared[limit] = DeflateExtension(limit)
    return extension


def _control(proto: FrameDecoder | FrameProtocol) -> bool:
    """The frame being parsed is a control frame (a ping inside a compressed fragmented message)."""
    header = getattr(proto, "header", None)
    return header is not None and header.opcode.iscontrol()


class Compressor:
    """Builds each frame's compressed variant once (stored on the frame, see
    :class:`~uipd.core.compression.Frame`) and counts what compression did, for /metrics.

    Small frames are compressed in the flusher's pass when the first compressing client is written
    to; a frame over ``OFF_LOOP_BYTES`` in a worker thread, once: whoever else needs it meanwhile
    waits for the same result (``ready``)."""

    __slots__ = (
        "level", "threshold", "clients", "input_bytes", "output_bytes", "plain_bytes", "cpu_seconds",
        "built", "off_loop", "_building",
    )

    def __init__(self, level: int = 1, threshold: int = 256) -> None:
        self.level = level
        self.threshold = threshold
        self.clients = 0
        """Connected clients that negotiated compression."""
        self.input_bytes = 0
        """Frame bytes (uncompressed) written to compressing clients."""
        self.output_bytes = 0
        """What was written for them instead (compressed variants, and frames that went plain)."""
        self.plain_bytes = 0
        """Frame bytes written to clients that did not negotiate compression."""
        self.cpu_seconds = 0.0
        self.built = 0
        """Variants built (one per message some compressing client received)."""
        self.off_loop = 0
        """Of those, built in a worker thread."""
        self._building: dict[int, tuple[bytes, trio.Event]] = {}
        """id(frame) -> (frame, set when its variant is stored): the large frames being compressed."""

    def configure(self, level: int, threshold: int) -> None:
        """A (re)loaded config: new frames are built with these; variants already built stay."""
        self.level, self.threshold = level, threshold

    def variants(self, frames: list[bytes], *, inline: bool = False) -> list[bytes] | None:
        """What to write to a compressing client for ``frames``: each frame's variant (built
        now if small); None when a large frame's variant is not built yet (``ready`` builds it;
        ``inline``: build it here, whatever its size)."""
        out = []
        size_in = size_out = 0
        for frame in frames:
            if type(frame) is Frame:
                variant = frame.deflated()
                if variant is None:
                    if len(frame) > OFF_LOOP_BYTES and not inline:
                        return None
                    variant = self._build(frame)
            else:
                variant = frame  # a control frame (pong, close): never compressed
            size_in += len(frame)
            size_out += len(variant)
            out.append(variant)
        self.input_bytes += size_in
        self.output_bytes += size_out
        return out

    def _build(self, frame: Frame) -> bytes:
        variant, spent = build_variant(frame, self.level, self.threshold, cpu_time)
        frame.set_deflated(variant)
        self.cpu_seconds += spent
        self.built += 1
        return variant

    async def ready(self, frames: Sequence[bytes]) -> None:
        """Build the variants of the large frames among ``frames`` off the event loop, each once."""
        for frame in frames:
            if type(frame) is not Frame or frame.deflated() is not None or len(frame) <= OFF_LOOP_BYTES:
                continue
            building = self._building.get(id(frame))
            if building is not None:
                await building[1].wait()
                continue
            done = trio.Event()
            self._building[id(frame)] = (frame, done)
            try:
                # Shielded: whoever waits on ``done`` gets the variant even if this client went away.
                with trio.CancelScope(shield=True):
                    variant, spent = await trio.to_thread.run_sync(build_variant, frame, self.level, self.threshold, cpu_time)
                frame.set_deflated(variant)
                self.cpu_seconds += spent
                self.built += 1
                self.off_loop += 1
            finally:
                del self._building[id(frame)]
                done.set()

    @property
    def ratio(self) -> float:
        """Bytes written to compressing clients per byte of their frames (1.0 before any)."""
        return self.output_bytes / self.input_bytes if self.input_bytes else 1.0
