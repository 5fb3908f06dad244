"""The DTLS role of our answers: the server is the DTLS server (`setup:passive`) towards an
`actpass` offer, so peers whose certificate is RSA can connect (aiortc's DTLS client offers
only ECDSA suites), and an offer of `active` or `passive` is honoured. Each case connects a
real aiortc peer through the media plane with the offer's setup line as given."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiosfu.sfu.ice import use_host_addresses
from aiosfu.sfu.local import LocalSfu
from tests.conftest import wait_for
from tests.media import ToneTrack

pytestmark = pytest.mark.media

ANSWERED = {"actpass": "passive", "active": "passive", "passive": "active"}


@pytest.fixture
async def sfu() -> AsyncIterator[LocalSfu]:
    use_host_addresses(["127.0.0.1"])
    media_plane = LocalSfu()
    yield media_plane
    await media_plane.close()


def setup_lines(sdp: str) -> set[str]:
    return set(re.findall(r"a=setup:(\w+)", sdp))


@pytest.mark.parametrize("offered", ["actpass", "active", "passive"])
async def test_answer_takes_the_role_the_offer_leaves_and_connects(
    sfu: LocalSfu, offered: str
) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(ToneTrack())
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp.replace("a=setup:actpass", f"a=setup:{offered}")
        published = await sfu.publish("r1", "alice", offer, {})
        assert setup_lines(published.answer_sdp) == {ANSWERED[offered]}
        await pc.setRemoteDescription(RTCSessionDescription(published.answer_sdp, "answer"))
        transport = sfu.publishers[published.mid]
        await wait_for(
            lambda: (
                pc.connectionState == "connected" and transport.pc.connectionState == "connected"
            ),
            timeout=10,
        )
        server_role = transport.pc.getTransceivers()[0].receiver.transport._role
        assert server_role == ("server" if ANSWERED[offered] == "passive" else "client")
    finally:
        await pc.close()
