"""An RTSP camera for tests: GStreamer's RTSP server (Debian's python3-gi and
gir1.2-gst-rtsp-server-1.0), run under /usr/bin/python3 as a subprocess (see tests/gst.py
for why), serving H264 (Constrained Baseline, as cameras' sub-streams are) and AAC from
test sources at rtsp://127.0.0.1:PORT/cam.

usage: rtsp_camera.py PORT WIDTH HEIGHT [--no-audio] [--vp8]; prints "ready" once it
listens. --vp8 serves VP8 instead, which the ingest must refuse (it never re-encodes).
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    port, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    audio = "--no-audio" not in sys.argv
    Gst.init(None)
    if "--vp8" in sys.argv:
        encode = "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96"
    else:
        encode = (
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=800 ! "
            "video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 "
            "config-interval=-1"
        )
    video = (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate=25/1 ! {encode}"
    )
    sound = (
        " audiotestsrc is-live=true wave=sine freq=440 ! audio/x-raw,rate=48000,channels=2 ! "
        "avenc_aac ! aacparse ! rtpmp4gpay name=pay1 pt=97"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {video}{sound if audio else ''} )")
    factory.set_shared(True)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
