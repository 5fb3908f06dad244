"""Data channels through the SFU: chat and app data relayed among the peers of a room.

A peer opens data channels on its publish connection. A message sent on a channel
labelled L reaches every other peer of the room that has a channel labelled L (opening
"chat" is how a peer joins the room's chat), or one of them when the sender names it.
aiortc gives us the SCTP association and the channels; what no library does is the
relay itself, so it is written here: a small envelope, per-receiver back-pressure and
counters. The wire format (docs/p2p.md, "Data channels through the SFU"):

- text up:   `{"data": <any JSON>, "to"?: uid}`
- text down: `{"from": uid, "data": <same>, "to"?: uid}`, `{"error": {"code", "reason"}}`
  in reply to a message the relay refused, `{"dropped": n}` after a gap (below)
- binary up:   u16 big-endian length, target uid (UTF-8; length 0 = everyone), payload
- binary down: u16 big-endian length, sender uid (UTF-8), payload

Order: each receiver gets one sender's messages in the order they were sent, because
they are forwarded synchronously as aiortc delivers them onto that receiver's ordered
channel. Back-pressure: a receiver whose channel holds more than `buffer_bytes` unsent
bytes (`bufferedAmount`, aiortc's public counter) is skipped instead of queued, so a
stalled peer costs at most that much memory and slows nobody else. It gets nothing more
until its buffer drains below half the limit, then one `{"dropped": n}` telling it how
many messages it missed, then the stream resumes: a gap is never silent.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel

from aiosfu.contract import ErrorCode, SfuError
from aiosfu.log import get_logger

log = get_logger("aiosfu.sctp")

_U16 = struct.Struct("!H")


class RefusedMessage(SfuError):
    """A data-channel message the relay will not carry; answered in band, on the channel."""


@dataclass(eq=False)
class DataEndpoint:
    """One peer's channel of one label, on one of its publish connections."""

    rid: str
    uid: str
    mid: str
    channel: RTCDataChannel
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    refused: int = 0  # its own messages the relay refused
    dropped: int = 0  # messages to it skipped since the last {"dropped"} notice
    dropped_total: int = 0
    max_buffered: int = 0
    attached: bool = True

    @property
    def label(self) -> str:
        return self.channel.label

    def stats(self) -> dict[str, Any]:
        return {
            "rid": self.rid,
            "uid": self.uid,
            "mid": self.mid,
            "label": self.label,
            "state": self.channel.readyState,
            "messagesIn": self.messages_in,
            "bytesIn": self.bytes_in,
            "messagesOut": self.messages_out,
            "bytesOut": self.bytes_out,
            "refused": self.refused,
            "dropped": self.dropped_total,
            "buffered": self.channel.bufferedAmount,
            "maxBuffered": self.max_buffered,
        }


def encode_binary(uid: str, payload: bytes) -> bytes:
    """A binary frame: the peer it names (target up, sender down), then the payload."""
    name = uid.encode()
    return _U16.pack(len(name)) + name + payload


def decode_binary(frame: bytes) -> tuple[str, bytes]:
    if len(frame) < _U16.size:
        raise RefusedMessage(
            ErrorCode.BAD_MESSAGE, "a binary message starts with a 2-byte uid length"
        )
    (length,) = _U16.unpack_from(frame)
    end = _U16.size + length
    if len(frame) < end:
        raise RefusedMessage(ErrorCode.BAD_MESSAGE, f"the binary header names a {length}-byte uid")
    try:
        uid = frame[_U16.size : end].decode()
    except UnicodeDecodeError as exc:
        raise RefusedMessage(
            ErrorCode.BAD_MESSAGE, "the uid in the binary header is not UTF-8"
        ) from exc
    return uid, frame[end:]


def decode_text(text: str) -> tuple[str, Any]:
    """The target ("" for everyone) and the data of a text message."""
    try:
        envelope = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RefusedMessage(ErrorCode.BAD_MESSAGE, f"a text message must be JSON: {exc}") from exc
    if not isinstance(envelope, dict) or "data" not in envelope:
        raise RefusedMessage(ErrorCode.BAD_MESSAGE, 'a text message is a JSON object {"data": ...}')
    to = envelope.get("to", "")
    if to is None:
        to = ""
    if not isinstance(to, str):
        raise RefusedMessage(ErrorCode.BAD_MESSAGE, '"to" must be a peer id (a string)')
    return to, envelope["data"]


class DataRelay:
    """Every relayed data channel of this SFU, grouped by room and label."""

    def __init__(self, max_message_bytes: int = 16384, buffer_bytes: int = 1 << 20) -> None:
        self.max_message_bytes = max_message_bytes
        self.buffer_bytes = buffer_bytes
        self._groups: dict[tuple[str, str], list[DataEndpoint]] = {}
        self._by_mid: dict[str, list[DataEndpoint]] = {}

    def attach(self, rid: str, uid: str, mid: str, channel: RTCDataChannel) -> DataEndpoint:
        """Relay `channel` (opened by peer `uid` on its publish connection `mid`)."""
        endpoint = DataEndpoint(rid=rid, uid=uid, mid=mid, channel=channel)
        channel.bufferedAmountLowThreshold = self.buffer_bytes // 2
        channel.on("message", lambda message: self._on_message(endpoint, message))
        channel.on("bufferedamountlow", lambda: self._drained(endpoint))
        channel.on("close", lambda: self._detach(endpoint))
        self._groups.setdefault((rid, channel.label), []).append(endpoint)
        self._by_mid.setdefault(mid, []).append(endpoint)
        log.info("datachannel-open", rid=rid, uid=uid, mid=mid, label=channel.label)
        return endpoint

    def close_mid(self, mid: str) -> None:
        """The publish connection `mid` is going away: stop relaying its channels."""
        for endpoint in list(self._by_mid.get(mid, ())):
            self._detach(endpoint)

    def _detach(self, endpoint: DataEndpoint) -> None:
        if not endpoint.attached:
            return
        endpoint.attached = False
        key = (endpoint.rid, endpoint.label)
        group = self._groups.get(key, [])
        if endpoint in group:
            group.remove(endpoint)
        if not group:
            self._groups.pop(key, None)
        siblings = self._by_mid.get(endpoint.mid, [])
        if endpoint in siblings:
            siblings.remove(endpoint)
        if not siblings:
            self._by_mid.pop(endpoint.mid, None)
        log.info(
            "datachannel-closed",
            rid=endpoint.rid,
            uid=endpoint.uid,
            label=endpoint.label,
            messages_in=endpoint.messages_in,
            messages_out=endpoint.messages_out,
            dropped=endpoint.dropped_total,
        )

    # --- relay --------------------------------------------------------------------------

    def _on_message(self, source: DataEndpoint, message: str | bytes) -> None:
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        source.messages_in += 1
        source.bytes_in += size
        try:
            if size > self.max_message_bytes:
                raise RefusedMessage(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"a message of {size} bytes exceeds the limit of {self.max_message_bytes}",
                )
            if isinstance(message, bytes):
                to, payload = decode_binary(message)
                out: str | bytes = encode_binary(source.uid, payload)
            else:
                to, data = decode_text(message)
                envelope: dict[str, Any] = {"from": source.uid, "data": data}
                if to:
                    envelope["to"] = to
                out = json.dumps(envelope, separators=(",", ":"))
            targets = self._targets(source, to)
        except RefusedMessage as exc:
            source.refused += 1
            log.info(
                "datachannel-refused", rid=source.rid, uid=source.uid, code=exc.code, size=size
            )
            reply = {"error": {"code": exc.code, "reason": exc.reason}}
            self._deliver(source, json.dumps(reply, separators=(",", ":")))
            return
        out_size = len(out) if isinstance(out, bytes) else len(out.encode())
        for target in targets:
            self._deliver(target, out, out_size)

    def _targets(self, source: DataEndpoint, to: str) -> list[DataEndpoint]:
        group = self._groups.get((source.rid, source.label), [])
        if not to:
            return [e for e in group if e.uid != source.uid]
        targets = [e for e in group if e.uid == to and to != source.uid]
        if not targets:
            raise RefusedMessage(
                ErrorCode.UNKNOWN_PEER,
                f"no other peer {to!r} with a {source.label!r} data channel in room {source.rid!r}",
            )
        return targets

    def _deliver(self, target: DataEndpoint, message: str | bytes, size: int = 0) -> None:
        channel = target.channel
        if channel.readyState != "open":
            return
        if not size:
            size = len(message) if isinstance(message, bytes) else len(message.encode())
        if target.dropped:
            if channel.bufferedAmount > channel.bufferedAmountLowThreshold:
                self._drop(target)
                return
            self._report_drops(target)
        if channel.bufferedAmount + size > self.buffer_bytes:
            self._drop(target)
            return
        try:
            channel.send(message)
        except ValueError:  # bigger than the receiver accepts (its max-message-size)
            self._drop(target)
            return
        target.messages_out += 1
        target.bytes_out += size
        if channel.bufferedAmount > target.max_buffered:
            target.max_buffered = channel.bufferedAmount

    def _drop(self, target: DataEndpoint) -> None:
        if not target.dropped:
            log.info("datachannel-overflow", rid=target.rid, uid=target.uid, label=target.label)
        target.dropped += 1
        target.dropped_total += 1

    def _report_drops(self, target: DataEndpoint) -> None:
        count, target.dropped = target.dropped, 0
        log.info("datachannel-resumed", rid=target.rid, uid=target.uid, dropped=count)
        if target.channel.readyState == "open":
            target.channel.send(json.dumps({"dropped": count}, separators=(",", ":")))

    def _drained(self, target: DataEndpoint) -> None:
        if target.dropped:
            self._report_drops(target)

    def stats(self) -> list[dict[str, Any]]:
        return [e.stats() for group in self._groups.values() for e in group]
