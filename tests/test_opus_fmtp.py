"""Opus fmtp in our answers (RFC 7587): the offerer's valid parameters kept, nothing out of
range ever written, in-band FEC asked for where it is offered; checked on the parameters
and on the answers a real media plane gives to Firefox's and Chromium's Opus offers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from aiosfu.sfu.local import LocalSfu
from aiosfu.sfu.opus import answer_parameters, negotiate_opus, parse_fmtp

FIREFOX = "maxplaybackrate=48000;stereo=1;useinbandfec=1"
CHROMIUM = "minptime=10;useinbandfec=1"


def test_firefox_parameters_are_kept_and_fec_asked_for() -> None:
    assert answer_parameters(parse_fmtp(FIREFOX)) == {
        "stereo": "1",
        "sprop-stereo": "1",
        "useinbandfec": "1",
        "maxplaybackrate": "48000",
    }


def test_chromium_parameters_are_kept_and_fec_asked_for() -> None:
    assert answer_parameters(parse_fmtp(CHROMIUM)) == {
        "stereo": "1",
        "sprop-stereo": "1",
        "useinbandfec": "1",
        "minptime": "10",
    }


def test_dtx_and_packet_times_are_kept() -> None:
    offered = parse_fmtp("usedtx=1; ptime=20 ;maxptime=60;maxaveragebitrate=64000;cbr=0")
    assert answer_parameters(offered) == {
        "stereo": "1",
        "sprop-stereo": "1",
        "ptime": "20",
        "maxptime": "60",
        "maxaveragebitrate": "64000",
        "usedtx": "1",
        "cbr": "0",
    }


@pytest.mark.parametrize(
    "bad",
    [
        "maxplaybackrate=0",
        "maxplaybackrate=96000",
        "maxplaybackrate=-1",
        "maxplaybackrate=fast",
        "minptime=0",
        "minptime=500",
        "usedtx=2",
        "maxaveragebitrate=1",
        "cbr=yes",
    ],
)
def test_out_of_range_values_are_never_written(bad: str) -> None:
    assert answer_parameters(parse_fmtp(bad)) == {"stereo": "1", "sprop-stereo": "1"}


def test_fec_is_not_asked_for_when_not_offered() -> None:
    assert "useinbandfec" not in answer_parameters(parse_fmtp("useinbandfec=0"))
    assert "useinbandfec" not in answer_parameters({})


def test_each_payload_type_gets_its_own_offer() -> None:
    offer = (
        "a=rtpmap:109 opus/48000/2\r\na=fmtp:109 maxplaybackrate=24000\r\n"
        "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 useinbandfec=1\r\n"
    )
    answer = "a=rtpmap:109 opus/48000/2\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 x=1\r\n"
    fmtp = re.findall(r"a=fmtp:(\d+) (.*)", negotiate_opus(offer, answer))
    assert [(pt, line.strip()) for pt, line in fmtp] == [
        ("109", "stereo=1;sprop-stereo=1;maxplaybackrate=24000"),
        ("111", "stereo=1;sprop-stereo=1;useinbandfec=1"),
    ]


@pytest.fixture
async def sfu() -> AsyncIterator[LocalSfu]:
    media_plane = LocalSfu()
    yield media_plane
    await media_plane.close()


async def opus_offer(direction: str, fmtp: str) -> str:
    """aiortc's own offer with a browser's Opus fmtp line in it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return re.sub(
        r"(a=rtpmap:(\d+) opus/48000/2\r\n)",
        lambda m: f"{m.group(1)}a=fmtp:{m.group(2)} {fmtp}\r\n",
        sdp,
    )


def answered_opus(sdp: str) -> dict[str, str]:
    pt = re.search(r"a=rtpmap:(\d+) opus/48000/2", sdp)
    assert pt, sdp
    lines = re.findall(rf"a=fmtp:{pt.group(1)} (.*)", sdp)
    assert len(lines) == 1, sdp
    return parse_fmtp(lines[0])


@pytest.mark.parametrize("fmtp", [FIREFOX, CHROMIUM])
async def test_publish_and_subscribe_answers_keep_the_browsers_parameters(
    sfu: LocalSfu, fmtp: str
) -> None:
    offered = parse_fmtp(fmtp)
    published = await sfu.publish("r1", "alice", await opus_offer("sendonly", fmtp), {})
    subscribed = await sfu.subscribe("r1", "bob", published.mid, await opus_offer("recvonly", fmtp))
    for answer in (published.answer_sdp, subscribed.answer_sdp):
        params = answered_opus(answer)
        assert params["useinbandfec"] == "1"
        assert params["stereo"] == params["sprop-stereo"] == "1"
        for key in ("maxplaybackrate", "minptime"):
            assert params.get(key) == offered.get(key)
