"""A PacketIO is one peer connection's media packets at the edge of the process: SRTP
and the socket on the wire side, clear RTP and RTCP on ours.

aiortc stays the control plane (ICE, DTLS, SCTP, SDP); once DTLS is up, `aiortc_hooks`
hands the PacketIO the pieces of that connection it needs (the keyed SRTP sessions, the
nominated pair's socket and remote address, aiortc's own datagram handler for whatever
is not ours) and sets the PacketIO's receive hook on that socket. From then on:

- in: an SRTP datagram from the peer whose SSRC has a route is unprotected and its
  clear bytes handed to that route (a receiver's ingest) with the kernel's arrival
  time, all in the socket callback; an SRTCP datagram from the peer is unprotected and
  the clear compound packet handed to the connection's one RTCP route (which reads what
  is ours and gives the rest to aiortc's RTCP dispatch); anything else (DTLS, STUN, an
  SSRC with no route yet) goes to aiortc untouched, so SRTP keeps its replay state right;
- out: `send_rtp(header, payload)` copies both once into the SRTP buffer, protects them
  there and `sendto`s the nominated pair's socket; `send_rtcp(data)` protects a compound
  RTCP packet and sends it the same way.

This is the one place a later transport plugs in: a single-port (ICE-lite) socket
shared by every connection would give each PacketIO its address and sessions, and a
compiled fan-out would replace `send_rtp` and the receive hook. Nothing above it knows
about sockets or SRTP.

SRTP is libsrtp through pylibsrtp; the RTP calls here reach into pylibsrtp's session
(its cffi handle and buffer) to skip the per-call allocation and checks its methods
make, and fall back to those methods if pylibsrtp's internals are not where this
expects them (tests/test_fastpath.py compares both). RTCP, a few packets a second, uses
pylibsrtp's own `protect_rtcp` and `unprotect_rtcp`.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import pylibsrtp

from aiosfu.sfu.uplink import Uplink, transport_sequence_of

Address = tuple[Any, ...]
# A clear RTP datagram as read from the socket, and when it arrived (µs, uplink.now_us)
RtpRoute = Callable[[bytes, int], None]
SendRtp = Callable[[bytes | bytearray, bytes], None]
# A clear compound RTCP packet, from the peer or to it
RtcpRoute = Callable[[bytes], None]
SendRtcp = Callable[[bytes], None]
Datagrams = Callable[[bytes, Address], None]

SRTP_MAX_TRAILER_LEN = 144  # libsrtp's bound on what protect() appends
STAMP = struct.Struct("qq")  # struct timespec
MAX_RTP_SIZE = 1500 - 28  # the largest RTP packet one IPv4 UDP datagram carries on Ethernet
DRAIN_LIMIT = 16  # datagrams read per socket wake-up beyond the first, at most
SIOCGSTAMPNS = 0x8907  # Linux: when the last datagram read from a socket arrived


def _not_connected(header: bytes | bytearray, payload: bytes) -> None:
    raise ConnectionError("Cannot send encrypted RTP, not connected")


def _rtcp_not_connected(data: bytes) -> None:
    raise ConnectionError("Cannot send encrypted RTCP, not connected")


class PacketIO:
    """One connection's packet boundary; lives as long as the connection, wired to the
    wire (`connect`) while DTLS is connected."""

    def __init__(self) -> None:
        # SSRC -> who takes its clear packets; filled by receivers as they learn SSRCs
        self.routes: dict[int, RtpRoute] = {}
        # who takes the peer's clear RTCP (None: it goes to aiortc's path still protected)
        self.rtcp_route: RtcpRoute | None = None
        # transport-cc arrival of what goes to aiortc's path (the connection's, if any)
        self.uplink: Uplink | None = None
        self.send_rtp: SendRtp = _not_connected
        self.send_rtcp: SendRtcp = _rtcp_not_connected
        self.connected = False
        self.rtcp_received = 0  # SRTCP datagrams unprotected here and routed
        self.rtcp_sent = 0
        self._receive: Datagrams | None = None
        self._wire: tuple[pylibsrtp.Session, Address, Any, Datagrams, int] | None = None

    def connect(
        self,
        *,
        rx_srtp: pylibsrtp.Session,
        tx_srtp: pylibsrtp.Session,
        remote: Address,
        sock: socket.socket | None,
        sendto: Callable[[bytes, Address], object],
        passthrough: Datagrams,
        max_size: int = 256 * 1024,
    ) -> None:
        """The wire, once DTLS is up: its keyed sessions, the nominated pair's remote
        address and socket (None when the asyncio transport has none to lend), the
        transport's own `sendto` and aiortc's handler for what is not ours."""
        self.send_rtp = self._egress(tx_srtp, remote, sock, sendto)
        self.send_rtcp = self._rtcp_egress(tx_srtp, remote, sock, sendto)
        self._receive = None
        self._wire = (rx_srtp, remote, sock, passthrough, max_size)
        self.connected = True

    def stats(self) -> dict[str, int]:
        return {"rtcpReceived": self.rtcp_received, "rtcpSent": self.rtcp_sent}

    def disconnect(self) -> None:
        self.send_rtp = _not_connected
        self.send_rtcp = _rtcp_not_connected
        self._receive = self._wire = None
        self.connected = False

    @property
    def datagram_received(self) -> Datagrams:
        """The receive hook, for the socket's protocol (asyncio's datagram callback);
        built on first use, as a connection that only sends never needs one."""
        if self._receive is None:
            if self._wire is None:
                raise ConnectionError("not connected")
            self._receive = self._ingress(*self._wire)
        return self._receive

    @staticmethod
    def _egress(
        session: pylibsrtp.Session,
        remote: Address,
        sock: socket.socket | None,
        sendto: Callable[[bytes, Address], object],
    ) -> SendRtp:
        protect = fast_protect_parts(session)
        if protect is None or sock is None:

            def send(header: bytes | bytearray, payload: bytes) -> None:
                try:
                    sendto(session.protect(bytes(header) + payload), remote)
                except ValueError:
                    pass  # too long for pylibsrtp's buffer

            return send
        sock_sendto = sock.sendto

        def send_direct(header: bytes | bytearray, payload: bytes) -> None:
            # Safe to bypass asyncio's datagram transport: UDP needs no ordering with
            # what it may have buffered, and a full socket buffer means a drop either way.
            try:
                sock_sendto(protect(header, payload), remote)
            except ValueError:
                pass  # larger than one UDP datagram: no peer could take it
            except BlockingIOError:
                pass  # dropped as on a congested link; NACK/PLI repair it
            except OSError as exc:  # the socket is closed: the connection is going away
                raise ConnectionError(str(exc)) from exc

        return send_direct

    def _rtcp_egress(
        self,
        session: pylibsrtp.Session,
        remote: Address,
        sock: socket.socket | None,
        sendto: Callable[[bytes, Address], object],
    ) -> SendRtcp:
        protect_rtcp = session.protect_rtcp
        send = sock.sendto if sock is not None else sendto
        io = self

        def send_rtcp(data: bytes) -> None:
            try:
                datagram = protect_rtcp(data)
            except ValueError:
                return  # too long for pylibsrtp's buffer, as aiortc's path would refuse
            try:
                send(datagram, remote)
                io.rtcp_sent += 1
            except BlockingIOError:
                pass  # dropped as on a congested link; RTCP is sent again
            except OSError as exc:  # the socket is closed: the connection is going away
                raise ConnectionError(str(exc)) from exc

        return send_rtcp

    def _ingress(
        self,
        session: pylibsrtp.Session,
        remote: Address,
        sock: socket.socket | None,
        passthrough: Datagrams,
        max_size: int,
    ) -> Datagrams:
        unprotect = fast_unprotect(session)
        unprotect_rtcp = session.unprotect_rtcp
        routes = self.routes
        from_bytes = int.from_bytes
        arrival = arrival_clock(sock)
        remote = tuple(remote)
        io = self

        def datagram_received(data: bytes, addr: Address) -> None:
            # asyncio read this datagram just now, so the socket's timestamp is its own.
            handle(data, addr, arrival())
            if sock is None:
                return
            # A video frame arrives as a burst of packets: take what else is already
            # queued now, instead of one event-loop turn (and epoll_wait) per datagram.
            for _ in range(DRAIN_LIMIT):
                try:
                    data, addr = sock.recvfrom(max_size)
                except OSError:  # drained (or an error asyncio will see on its next read)
                    return
                handle(data, addr, arrival())

        def handle(data: bytes, addr: Address, arrival_us: int) -> None:
            # RFC 7983: 128-191 is RTP/RTCP; RTCP packet types are 192-223 (RFC 5761).
            if 127 < data[0] < 192 and len(data) > 12:
                if 191 < data[1] < 224:
                    rtcp_route = io.rtcp_route
                    if rtcp_route is not None and (addr[0], addr[1]) == remote:
                        try:
                            clear = unprotect_rtcp(data)
                        except (pylibsrtp.Error, ValueError):
                            return
                        io.rtcp_received += 1
                        rtcp_route(clear)
                        return
                    passthrough(data, addr)
                    return
                route = routes.get(from_bytes(data[8:12], "big"))
                if route is not None and (addr[0], addr[1]) == remote:
                    try:
                        clear = unprotect(data)
                    except pylibsrtp.Error:
                        return
                    route(clear, arrival_us)
                    return
                # aiortc's path queues it: note its arrival for transport-cc now, from
                # the header SRTP leaves in clear (RFC 3711), if it is the peer's.
                uplink = io.uplink
                if uplink is not None and (addr[0], addr[1]) == remote:
                    sequence = transport_sequence_of(data, uplink.extension_id)
                    if sequence is not None:
                        uplink.record(
                            sequence, from_bytes(data[8:12], "big"), arrival_us, len(data)
                        )
            passthrough(data, addr)

        return datagram_received


def fast_protect(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.protect` without its per-call allocation and checks (a third of its cost
    at 1200 bytes): the same libsrtp call on the session's own buffer. Falls back to
    `session.protect` if pylibsrtp's internals are not where this expects them."""
    parts = fast_protect_parts(session)
    if parts is None:
        return session.protect

    def protect(data: bytes) -> bytes:
        return bytes(parts(b"", data))

    return protect


def fast_protect_parts(
    session: pylibsrtp.Session,
) -> Callable[[bytes | bytearray, bytes], memoryview] | None:
    """protect(header, payload): both copied once, straight into the session's own
    buffer, protected there by libsrtp, and returned as a view of that buffer (valid until
    the next call): no joined packet, no copy out. None if pylibsrtp's internals moved."""
    try:
        from pylibsrtp._binding import ffi, lib

        srtp = session._srtp[0]
    except (ImportError, AttributeError):
        return None
    # Our own buffer, not the session's 1500 bytes: pylibsrtp keeps 144 of those for the
    # trailer, which caps RTP at 1356 bytes, and publishers such as GStreamer (1400-byte
    # payloader MTU) send larger packets, to which forwarding adds header extensions.
    cdata = ffi.new("char[]", MAX_RTP_SIZE + SRTP_MAX_TRAILER_LEN)
    buffer = ffi.buffer(cdata)
    size = MAX_RTP_SIZE
    view = memoryview(buffer)
    length = ffi.new("int *")
    srtp_protect = lib.srtp_protect

    def protect(
        header: bytes | bytearray, payload: bytes, _owner: pylibsrtp.Session = session
    ) -> memoryview:
        # _owner: `srtp` is only valid while the session that owns it lives
        h = len(header)
        n = h + len(payload)
        if n > size:
            raise ValueError("packet is too long")
        buffer[0:h] = header
        buffer[h:n] = payload
        length[0] = n
        error = srtp_protect(srtp, cdata, length)
        if error:
            raise pylibsrtp.Error(f"srtp_protect failed ({error})")
        return view[: length[0]]

    return protect


def fast_unprotect(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.unprotect` without its per-call allocation and checks; raises
    pylibsrtp.Error the same way. Falls back to `session.unprotect`."""
    try:
        from pylibsrtp._binding import ffi, lib

        cdata, buffer, srtp = session._cdata, session._buffer, session._srtp[0]
    except (ImportError, AttributeError):
        return session.unprotect
    size = len(buffer)
    length = ffi.new("int *")
    srtp_unprotect = lib.srtp_unprotect

    def unprotect(data: bytes, _owner: pylibsrtp.Session = session) -> bytes:
        n = len(data)
        if n > size:
            raise pylibsrtp.Error("packet is too long")
        length[0] = n
        buffer[0:n] = data
        error = srtp_unprotect(srtp, cdata, length)
        if error:
            raise pylibsrtp.Error(f"srtp_unprotect failed ({error})")
        clear: bytes = buffer[0 : length[0]]
        return clear

    return unprotect


def arrival_clock(sock: socket.socket | None) -> Callable[[], int]:
    """When the datagram just read from `sock` reached the host (µs on uplink.now_us's
    clock): the kernel's receive timestamp, so time the process waited to be scheduled
    (a busy machine, a long event-loop turn) is not taken for network queueing. Falls
    back to the read time where the kernel keeps no timestamp."""
    monotonic, wall = time.monotonic, time.time

    def read_time() -> int:
        return int(monotonic() * 1_000_000)

    if sock is None:
        return read_time
    fd = sock.fileno()
    stamp = bytearray(16)
    try:
        fcntl.ioctl(fd, SIOCGSTAMPNS, stamp, True)  # the first call turns stamping on
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: on, but nothing read since
            return read_time
    ioctl, unpack_from = fcntl.ioctl, STAMP.unpack_from

    def kernel_time() -> int:
        try:
            ioctl(fd, SIOCGSTAMPNS, stamp, True)
        except OSError:
            return int(monotonic() * 1_000_000)
        seconds: int
        nanoseconds: int
        seconds, nanoseconds = unpack_from(stamp)
        # the stamp is wall-clock time: moved onto the monotonic clock at this instant
        return int((seconds + nanoseconds / 1e9 + monotonic() - wall()) * 1_000_000)

    return kernel_time
