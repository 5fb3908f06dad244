"""aiosfu: a WebRTC selective forwarding unit and signaling server for rooms."""

__version__ = "0.1.0"
