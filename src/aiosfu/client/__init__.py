"""Python client SDK: join rooms, publish aiortc tracks, subscribe to streams.

Used by bots, tests and the load generator; it speaks only the public protocol.
"""

from aiosfu.client.client import Client, Publication, Subscription
from aiosfu.client.signaling import SignalingClient, SignalingError

__all__ = ["Client", "Publication", "SignalingClient", "SignalingError", "Subscription"]
