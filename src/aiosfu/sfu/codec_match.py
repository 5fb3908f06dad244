"""Which of a subscriber's offered codecs can carry a publication as it is sent, and why
not when none can.

The SFU forwards the publisher's bitstream untouched, so a subscriber must be able to
decode exactly that. For most codecs that means the same name and clock rate. H264 also
has a profile and a level (RFC 6184 §8.1, `profile-level-id`), read here as libwebrtc
reads them (aiortc's `parse_h264_profile_level_id` follows its table):

- the same profile: compatible, provided the subscriber's level is at least the level the
  publisher was answered with (a level in an offer is the most its decoder takes);
- a Constrained Baseline stream to a subscriber offering only Baseline: compatible.
  Constrained Baseline is Baseline without FMO, ASO and redundant slices (H.264 §A.2.1.1:
  its bitstreams conform to Baseline), so every Baseline decoder decodes it;
- a Baseline stream to a subscriber offering only Constrained Baseline: refused. A
  Baseline encoder may use exactly the tools a Constrained Baseline decoder lacks, and
  the SDP says nothing of whether this one did. (Chromium offers both and its encoder
  writes Constrained Baseline, so a publisher answered with 42e01f serves both.)

Packetization modes must match: mode 0 and mode 1 payloads are not interchangeable.
"""

from __future__ import annotations

from aiortc import RTCRtpSender
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import H264Level, H264Profile, parse_h264_profile_level_id

from aiosfu.contract import ErrorCode, SfuError

# An absent profile-level-id, as libwebrtc and aiortc read it: Constrained Baseline 3.1
# (RFC 6184's own default, Baseline level 1, is what no WebRTC stack means by it).
DEFAULT_PROFILE_LEVEL_ID = "42e01f"

PROFILE_NAMES = {
    H264Profile.PROFILE_CONSTRAINED_BASELINE: "Constrained Baseline",
    H264Profile.PROFILE_BASELINE: "Baseline",
    H264Profile.PROFILE_MAIN: "Main",
    H264Profile.PROFILE_CONSTRAINED_HIGH: "Constrained High",
    H264Profile.PROFILE_HIGH: "High",
    H264Profile.PROFILE_PREDICTIVE_HIGH_444: "Predictive High 4:4:4",
}


def _h264(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> tuple[H264Profile, float, int]:
    """(profile, level as a number that orders 1b between 1 and 1.1, packetization mode)."""
    profile_level_id = str(codec.parameters.get("profile-level-id", DEFAULT_PROFILE_LEVEL_ID))
    profile, level = parse_h264_profile_level_id(profile_level_id)
    number = 10.5 if level == H264Level.LEVEL1_B else float(level)
    return profile, number, int(str(codec.parameters.get("packetization-mode", 0)))


def describe(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> str:
    """A codec as a person reads it: `H264 Constrained Baseline level 3.1 (42e01f,
    packetization-mode 1)`, `opus/48000/2`."""
    name = codec.mimeType.split("/", 1)[-1]
    if name.lower() == "h264":
        profile_level_id = str(codec.parameters.get("profile-level-id", DEFAULT_PROFILE_LEVEL_ID))
        try:
            profile, level, mode = _h264(codec)
        except ValueError:
            return f"H264 ({profile_level_id}: not a profile-level-id we know)"
        shown = "1b" if level == 10.5 else f"{level / 10:g}"
        return (
            f"H264 {PROFILE_NAMES[profile]} level {shown}"
            f" ({profile_level_id.lower()}, packetization-mode {mode})"
        )
    channels = getattr(codec, "channels", None)
    return f"{name}/{codec.clockRate}" + (f"/{channels}" if channels else "")


def can_decode(sent: RTCRtpCodecParameters, offered: RTCRtpCodecParameters) -> bool:
    """Can a decoder that offered `offered` take the stream the publisher sends as `sent`?"""
    if sent.mimeType.lower() != offered.mimeType.lower() or sent.clockRate != offered.clockRate:
        return False
    if sent.mimeType.lower() != "video/h264":
        return True
    try:
        sent_profile, sent_level, sent_mode = _h264(sent)
        profile, level, mode = _h264(offered)
    except ValueError:
        return False
    subset = (sent_profile, profile) == (
        H264Profile.PROFILE_CONSTRAINED_BASELINE,
        H264Profile.PROFILE_BASELINE,
    )
    return sent_mode == mode and (sent_profile == profile or subset) and sent_level <= level


def subscriber_preferences(
    kind: str, mid: str, sent: RTCRtpCodecParameters, offered: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecCapability]:
    """Codec preferences for the subscriber's transceiver: the offered codec that can carry
    the publication, as aiortc knows it, plus RTX. SfuError("codec-unsupported") naming
    the publication's codec and everything the offer had, when none can."""
    primaries = [c for c in offered if not is_rtx(c)]
    match = next((c for c in primaries if can_decode(sent, c)), None)
    capabilities = RTCRtpSender.getCapabilities(kind).codecs
    # aiortc answers with its own capability that it finds the same as the offered codec.
    local = None
    if match is not None:
        local = next(
            (
                c
                for c in capabilities
                if not is_rtx(c)
                and c.mimeType.lower() == match.mimeType.lower()
                and c.clockRate == match.clockRate
                and _same_h264_profile(c, match)
            ),
            None,
        )
    if local is None:
        had = ", ".join(describe(c) for c in primaries) or "no codecs"
        raise SfuError(
            ErrorCode.CODEC_UNSUPPORTED,
            f"stream {mid!r} sends {kind} as {describe(sent)}, which none of the offered"
            f" {kind} codecs can decode: {had}",
        )
    rtx = [c for c in capabilities if c.mimeType.lower() == f"{kind}/rtx"]
    return [local, *rtx[:1]]


def _same_h264_profile(local: RTCRtpCodecCapability, offered: RTCRtpCodecParameters) -> bool:
    if local.mimeType.lower() != "video/h264":
        return True
    try:
        return _h264(local)[0::2] == _h264(offered)[0::2]
    except ValueError:
        return False
