"""RFC 6455 frames as a server reads and writes them, for the lean `/ws` path (upgrade.py).

Written here because the library that does this well for us, aiohttp, does it inside its
web stack only: its frame reader is internal API fed by its request handler. A server's
side is small: client frames are masked, no extension is negotiated (so RSV bits are
errors), messages may be fragmented with control frames in between, text must be UTF-8.
Every violation is a `FrameError` with the close code RFC 6455 section 7.4.1 gives it,
the same codes aiohttp closes with.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PROTOCOL_ERROR, INVALID_TEXT, MESSAGE_TOO_BIG = 1002, 1007, 1009

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
_LENGTH16 = struct.Struct("!H")
_LENGTH64 = struct.Struct("!Q")


class FrameError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    opcode: int  # TEXT, BINARY, CLOSE, PING or PONG
    data: bytes


def frame(opcode: int, payload: bytes) -> bytes:
    """A server-to-client frame (unmasked, final)."""
    first = 0x80 | opcode
    n = len(payload)
    if n < 126:
        return _SHORT.pack(first, n) + payload
    if n < 65536:
        return _MEDIUM.pack(first, 126, n) + payload
    return _LONG.pack(first, 127, n) + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A close frame; the reason is cut to fit a control frame's 125 bytes."""
    return frame(CLOSE, _LENGTH16.pack(code) + reason[:123])


def close_code(payload: bytes) -> int:
    """The code of a received close frame's payload (1005: it carried none)."""
    return _LENGTH16.unpack_from(payload)[0] if payload else 1005


def _unmask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return payload
    key = int.from_bytes(mask * (n // 4 + 1), "little") & ((1 << (8 * n)) - 1)
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class FrameReader:
    """Bytes in, whole messages out; a message longer than `max_message` is an error."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._fragmented_opcode = 0
        self._fragmented_size = 0

    def feed(self, data: bytes) -> list[Message]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[Message] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            if first & 0x70:
                raise FrameError(PROTOCOL_ERROR, "RSV bits set without an extension")
            if not second & 0x80:
                raise FrameError(PROTOCOL_ERROR, "client frames must be masked")
            fin, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            header = 2
            if length == 126:
                if end - offset < 4:
                    break
                (length,) = _LENGTH16.unpack_from(buffer, offset + 2)
                header = 4
            elif length == 127:
                if end - offset < 10:
                    break
                (length,) = _LENGTH64.unpack_from(buffer, offset + 2)
                header = 10
            control = opcode >= CLOSE
            if control and (not fin or length > 125):
                raise FrameError(PROTOCOL_ERROR, "control frames are final and at most 125 bytes")
            if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
                raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            if not control and self._fragmented_size + length > self.max_message:
                raise FrameError(MESSAGE_TOO_BIG, f"message exceeds {self.max_message} bytes")
            total = header + 4 + length
            if end - offset < total:
                break
            mask = buffer[offset + header : offset + header + 4]
            payload = _unmask(buffer[offset + header + 4 : offset + total], mask)
            offset += total
            if control:
                messages.append(self._control(opcode, payload))
                continue
            if opcode == CONTINUATION:
                if not self._fragmented_opcode:
                    raise FrameError(PROTOCOL_ERROR, "continuation without a message")
            elif self._fragmented_opcode:
                raise FrameError(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if not fin:
                self._fragmented_opcode = self._fragmented_opcode or opcode
                self._fragments.append(payload)
                self._fragmented_size += length
                continue
            if self._fragmented_opcode:
                opcode = self._fragmented_opcode
                payload = b"".join([*self._fragments, payload])
                self._fragments, self._fragmented_opcode, self._fragmented_size = [], 0, 0
            messages.append(Message(opcode, payload))
        self._buffer = buffer[offset:]
        if not self._fragmented_opcode and len(self._buffer) > self.max_message + 14:
            raise FrameError(MESSAGE_TOO_BIG, f"message exceeds {self.max_message} bytes")
        return messages

    @staticmethod
    def _control(opcode: int, payload: bytes) -> Message:
        if opcode == CLOSE and len(payload) == 1:
            raise FrameError(PROTOCOL_ERROR, "a close frame's code is two bytes")
        return Message(opcode, payload)
