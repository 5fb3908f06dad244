"""Python client SDK: join rooms, publish aiortc tracks, subscribe to streams.

Used by bots, tests and the load generator; it speaks only the public protocol.
"""

from aiosfu.client.client import Client, Publication, Subscription
from aiosfu.client.datachannel import DataMessage, RelayError, RoomChannel
from aiosfu.client.p2p import P2P, Mesh, PeerLink
from aiosfu.client.signaling import SignalingClient, SignalingError

__all__ = [
    "P2P",
    "Client",
    "DataMessage",
    "Mesh",
    "PeerLink",
    "Publication",
    "RelayError",
    "RoomChannel",
    "SignalingClient",
    "SignalingError",
    "Subscription",
]
