"""Codec matching between a publication and a subscriber's offer: H264 profiles as RFC
6184 and libwebrtc read them, and refusals that name the publication's codec and profile
and everything the offer had."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from aiosfu.sfu.codec_match import can_decode, describe
from aiosfu.sfu.interface import SfuError
from aiosfu.sfu.local import LocalSfu


def h264(profile_level_id: str, mode: int = 1) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=102,
        parameters={"packetization-mode": str(mode), "profile-level-id": profile_level_id},
    )


VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


@pytest.mark.parametrize(
    ("sent", "offered", "decodable"),
    [
        ("42e01f", "42e01f", True),  # same profile and level
        ("42e01f", "42c01f", True),  # Constrained Baseline written another way
        ("42e01f", "42001f", True),  # Constrained Baseline is a subset of Baseline
        ("42001f", "42e01f", False),  # Baseline may use FMO/ASO: not for a CB decoder
        ("42001f", "42001f", True),
        ("42e01f", "42e01e", False),  # level 3.1 stream, a decoder of level 3 at most
        ("42e01e", "42e01f", True),
        ("42e01f", "640c1f", False),  # Constrained High: another profile, as libwebrtc has it
        ("42e01f", "zz", False),
    ],
)
def test_h264_profiles(sent: str, offered: str, decodable: bool) -> None:
    assert can_decode(h264(sent), h264(offered)) is decodable


def test_h264_packetization_modes_must_match() -> None:
    assert not can_decode(h264("42e01f", 1), h264("42e01f", 0))


def test_other_codecs_match_by_name_and_rate() -> None:
    assert can_decode(VP8, VP8)
    assert not can_decode(VP8, h264("42e01f"))


def test_descriptions() -> None:
    assert describe(h264("42001f")) == "H264 Baseline level 3.1 (42001f, packetization-mode 1)"
    assert describe(h264("42E01F", 0)) == (
        "H264 Constrained Baseline level 3.1 (42e01f, packetization-mode 0)"
    )
    assert (
        describe(h264("42f00b"))
        == "H264 Constrained Baseline level 1b (42f00b, packetization-mode 1)"
    )
    assert describe(VP8) == "VP8/90000"


@pytest.fixture
async def sfu() -> AsyncIterator[LocalSfu]:
    media_plane = LocalSfu()
    yield media_plane
    await media_plane.close()


async def h264_offer(direction: str, *profiles: str) -> str:
    """aiortc's offer with only these H264 profiles, in this order."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver("video", direction=direction)
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences(
        [c for p in profiles for c in capabilities if c.parameters.get("profile-level-id") == p]
    )
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def answered_profiles(sdp: str) -> list[str]:
    return re.findall(r"profile-level-id=(\w+)", sdp)


async def test_baseline_to_a_constrained_baseline_decoder_is_refused_with_both_named(
    sfu: LocalSfu,
) -> None:
    published = await sfu.publish("r1", "alice", await h264_offer("sendonly", "42001f"), {})
    assert answered_profiles(published.answer_sdp) == ["42001f"]
    with pytest.raises(SfuError) as refused:
        await sfu.subscribe("r1", "bob", published.mid, await h264_offer("recvonly", "42e01f"))
    assert refused.value.code == "codec-unsupported"
    assert refused.value.reason == (
        f"stream {published.mid!r} sends video as H264 Baseline level 3.1 (42001f,"
        " packetization-mode 1), which none of the offered video codecs can decode:"
        " H264 Constrained Baseline level 3.1 (42e01f, packetization-mode 1)"
    )
    assert sfu.subscribers == {}


async def test_publisher_offering_both_is_received_as_constrained_baseline_for_everyone(
    sfu: LocalSfu,
) -> None:
    """Chromium's order: Baseline 42001f first, then Constrained Baseline 42e01f."""
    offer = await h264_offer("sendonly", "42001f", "42e01f")
    published = await sfu.publish("r1", "alice", offer, {})
    assert answered_profiles(published.answer_sdp)[0] == "42e01f"
    for uid, profile in (("bob", "42e01f"), ("carol", "42001f")):
        subscribed = await sfu.subscribe(
            "r1", uid, published.mid, await h264_offer("recvonly", profile)
        )
        assert answered_profiles(subscribed.answer_sdp) == [profile]
