"""Media pulled from outside a room and published into it (docs/rtsp.md)."""
