"""The client side of data channels relayed by the SFU (wire format in aiosfu.sfu.datachannel).

A `RoomChannel` wraps one aiortc data channel of a publish connection: `send` addresses
everyone (or one peer), received messages come out as `DataMessage`s with the sender's
uid, and the relay's own notices (a refused message, a gap after back-pressure) are kept
apart from peers' data instead of being mistaken for it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiortc import RTCDataChannel

from aiosfu.sfu.datachannel import decode_binary, encode_binary


@dataclass(frozen=True)
class DataMessage:
    sender: str  # "from" on the wire
    data: Any  # a JSON value, or bytes for a binary message
    to: str | None = None  # set when the sender addressed only this peer


@dataclass(frozen=True)
class RelayError:
    code: str
    reason: str


class RoomChannel:
    def __init__(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        self.messages: asyncio.Queue[DataMessage] = asyncio.Queue()
        self.errors: list[RelayError] = []  # the relay refused one of our messages
        self.dropped = 0  # messages the relay skipped because we were too slow to take them
        self.opened = asyncio.Event()
        if channel.readyState == "open":
            self.opened.set()
        channel.on("open", self.opened.set)
        channel.on("message", self._on_message)

    @property
    def label(self) -> str:
        return self.channel.label

    async def wait_open(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            await self.opened.wait()

    def send(self, data: Any, to: str | None = None) -> None:
        """Send a JSON value to every peer with this channel, or only to `to`."""
        envelope: dict[str, Any] = {"data": data}
        if to:
            envelope["to"] = to
        self.channel.send(json.dumps(envelope, separators=(",", ":")))

    def send_bytes(self, payload: bytes, to: str | None = None) -> None:
        self.channel.send(encode_binary(to or "", payload))

    async def recv(self, timeout: float = 10.0) -> DataMessage:
        async with asyncio.timeout(timeout):
            return await self.messages.get()

    def _on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            sender, payload = decode_binary(message)
            self.messages.put_nowait(DataMessage(sender=sender, data=payload))
            return
        envelope = json.loads(message)
        if "error" in envelope:
            self.errors.append(RelayError(**envelope["error"]))
        elif "dropped" in envelope:
            self.dropped += int(envelope["dropped"])
        else:
            self.messages.put_nowait(
                DataMessage(sender=envelope["from"], data=envelope["data"], to=envelope.get("to"))
            )
