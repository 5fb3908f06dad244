"""A GStreamer webrtcbin peer, driven over stdin/stdout by the interop tests.

Runs under Debian's /usr/bin/python3, whose python3-gi the project's virtualenv does not
see: the test keeps its own interpreter and speaks seed-002 itself, and this process only
makes an offer (printed once ICE gathering is complete), takes the answer (one JSON line
on stdin) and reports what it sends or decodes. webrtcbin is left at its defaults where a
GStreamer application would be, `a=setup:actpass` among them.

    /usr/bin/python3 tests/gst_peer.py publish --video vp8 --audio
    /usr/bin/python3 tests/gst_peer.py subscribe --video h264

Every line out is one JSON object: {"event": "offer", "sdp": ...}, {"event": "state", ...},
{"event": "stats", "video_frames": n, "width": w, "height": h, "audio_buffers": n}.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402

VIDEO_SOURCE = (
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=480,framerate=20/1"
)
ENCODERS = {
    "vp8": "vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay picture-id-mode=15-bit"
    " ! application/x-rtp,media=video,encoding-name=VP8,payload=96",
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=800"
    " ! video/x-h264,profile=constrained-baseline"
    " ! rtph264pay config-interval=-1 aggregate-mode=zero-latency"
    " ! application/x-rtp,media=video,encoding-name=H264,payload=102",
}
RECEIVE_CAPS = {
    "vp8": "application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload=96",
    "h264": "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=102,"
    "packetization-mode=(string)1,profile-level-id=(string)42e01f",
    "opus": "application/x-rtp,media=audio,encoding-name=OPUS,clock-rate=48000,payload=111,"
    "encoding-params=(string)2",
}


def say(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


class Peer:
    def __init__(self, mode: str, video: str | None, audio: bool) -> None:
        self.mode = mode
        self.video_frames = 0
        self.audio_buffers = 0
        self.size: tuple[int, int] = (0, 0)
        if mode == "publish":
            parts = ["webrtcbin name=webrtc bundle-policy=max-bundle"]
            if video:
                parts.append(f"{VIDEO_SOURCE} ! {ENCODERS[video]} ! webrtc.")
            if audio:
                parts.append(
                    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample"
                    " ! opusenc ! rtpopuspay"
                    " ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc."
                )
            self.pipeline = Gst.parse_launch(" ".join(parts))
        else:
            self.pipeline = Gst.Pipeline.new("subscriber")
            webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
            webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
            self.pipeline.add(webrtc)
        self.webrtc = self.pipeline.get_by_name("webrtc")
        # libnice leaves loopback out of its host candidates, and loopback is all a test
        # namespace has. The agent must stay referenced from Python: dropping the
        # wrapper unrefs an object webrtcbin still uses.
        self.ice = self.webrtc.get_property("ice-agent")
        self.agent = self.ice.get_property("agent")
        address = Nice.Address.new()
        address.set_from_string("127.0.0.1")
        self.agent.add_local_address(address)
        if mode == "subscribe":
            direction = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
            if video:
                self.webrtc.emit(
                    "add-transceiver", direction, Gst.Caps.from_string(RECEIVE_CAPS[video])
                )
            if audio:
                self.webrtc.emit(
                    "add-transceiver", direction, Gst.Caps.from_string(RECEIVE_CAPS["opus"])
                )
            self.webrtc.connect("pad-added", self._on_incoming)
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.offered = False

    # --- offer / answer ---------------------------------------------------------------

    def _on_negotiation_needed(self, element: Gst.Element) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_offer_created, None)
        element.emit("create-offer", None, promise)

    def _on_offer_created(self, promise: Gst.Promise, _: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply is not None else None
        if offer is None:
            say("error", message=f"create-offer failed: {reply.to_string() if reply else None}")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _on_gathering(self, element: Gst.Element, _: Any) -> None:
        state = element.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offered:
            self.offered = True
            sdp = element.get_property("local-description").sdp.as_text()
            say("offer", sdp=sdp)

    def take_answer(self, sdp_text: str) -> None:
        _, sdp = GstSdp.SDPMessage.new_from_text(sdp_text)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())

    def _on_connection_state(self, element: Gst.Element, _: Any) -> None:
        state = element.get_property("connection-state")
        say("state", connection=state.value_nick)

    # --- receiving ----------------------------------------------------------------------

    def _on_incoming(self, element: Gst.Element, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        decodebin = Gst.ElementFactory.make("decodebin")
        decodebin.connect("pad-added", self._on_decoded)
        self.pipeline.add(decodebin)
        decodebin.sync_state_with_parent()
        pad.link(decodebin.get_static_pad("sink"))

    def _on_decoded(self, decodebin: Gst.Element, pad: Gst.Pad) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        kind = caps.get_structure(0).get_name()
        sink = Gst.ElementFactory.make("fakesink")
        sink.set_property("sync", False)
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        if kind.startswith("video/"):
            pad.add_probe(Gst.PadProbeType.BUFFER, self._count_video)
        elif kind.startswith("audio/"):
            pad.add_probe(Gst.PadProbeType.BUFFER, self._count_audio)

    def _count_video(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.video_frames += 1
        structure = pad.get_current_caps().get_structure(0)
        self.size = (structure.get_int("width")[1], structure.get_int("height")[1])
        return Gst.PadProbeReturn.OK

    def _count_audio(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        self.audio_buffers += 1
        return Gst.PadProbeReturn.OK

    def report(self) -> bool:
        say(
            "stats",
            video_frames=self.video_frames,
            width=self.size[0],
            height=self.size[1],
            audio_buffers=self.audio_buffers,
        )
        return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["publish", "subscribe"])
    parser.add_argument("--video", choices=sorted(ENCODERS))
    parser.add_argument("--audio", action="store_true")
    args = parser.parse_args()
    Gst.init(None)
    loop = GLib.MainLoop()
    peer = Peer(args.mode, args.video, args.audio)

    def on_stdin(channel: GLib.IOChannel, condition: GLib.IOCondition) -> bool:
        line = sys.stdin.readline()
        if not line:  # the test is done with us
            loop.quit()
            return False
        if not line.strip():
            return True
        message = json.loads(line)
        if "answer" in message:
            peer.take_answer(message["answer"])
        return True

    def on_bus(bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.ERROR:
            error, debug = message.parse_error()
            say("error", message=error.message, debug=debug)
            loop.quit()

    bus = peer.pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_bus)
    GLib.io_add_watch(
        GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.IO_IN | GLib.IO_HUP, on_stdin
    )
    GLib.timeout_add(250, peer.report)
    peer.pipeline.set_state(Gst.State.PLAYING)
    try:
        loop.run()
    finally:
        peer.pipeline.set_state(Gst.State.NULL)


if __name__ == "__main__":
    main()
