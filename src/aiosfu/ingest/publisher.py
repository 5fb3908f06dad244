"""`aiosfu ingest`: a camera joins a room as a participant and publishes (docs/rtsp.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiosfu.ingest.rtsp import Backoff, RtspPull, StreamInfo
from aiosfu.log import get_logger

if TYPE_CHECKING:
    from aiosfu.client import Client, Publication

log = get_logger("aiosfu.ingest")


class CameraIngest:
    """One RTSP camera published into `rid` as `uid`, until `stop`."""

    def __init__(
        self,
        url: str,
        server: str,
        rid: str,
        uid: str,
        *,
        token: str | None = None,
        ice_ips: Sequence[str] | None = None,
        transport: str = "tcp",
        audio: bool = True,
        backoff: Backoff | None = None,
    ) -> None:
        self.server, self.rid, self.uid = server, rid, uid
        self.token, self.ice_ips = token, ice_ips
        self.pull = RtspPull(url, transport=transport, audio=audio, backoff=backoff)
        self.client: Client | None = None
        self.publication: Publication | None = None
        self.published = asyncio.Event()

    async def _publish(self, info: StreamInfo) -> None:
        from aiosfu.client import Client

        self.client = await Client.connect(
            self.server, self.uid, token=self.token, ice_ips=self.ice_ips
        )
        await self.client.join(self.rid)
        tracks = [
            track
            for track, present in ((self.pull.audio, info.audio), (self.pull.video, info.video))
            if present
        ]
        self.publication = await self.client.publish(
            self.rid, tracks, codecs={"video": "video/H264"}
        )
        log.info(
            "ingest-published", rid=self.rid, uid=self.uid, mid=self.publication.mid,
            video=f"{info.width}x{info.height}" if info.video else "-", audio=info.audio,
        )  # fmt: skip
        self.published.set()

    async def run(self) -> None:
        try:
            await self.pull.run(self._publish)
        finally:
            await self.close()

    async def close(self) -> None:
        self.pull.stop()
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()
