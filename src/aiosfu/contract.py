"""What the layers say to each other and to clients: result types, error codes, one error.

Every layer (`signal`, `room`, `sfu`, `record`) imports this module and nothing here
imports them, so it is the one place a new error code or result field is added, and the
media plane and its recorders share these types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    """Every errorCode the server sends; the values are wire strings and never change.

    docs/protocol.md lists each one with its meaning (tests/test_error_codes.py checks).
    """

    # The envelope (signal/protocol.py, signal/http.py)
    BAD_JSON = "bad-json"
    BAD_REQUEST = "bad-request"
    UNKNOWN_METHOD = "unknown-method"
    INVALID_PARAMS = "invalid-params"
    FRAME_TOO_LARGE = "frame-too-large"
    UNKNOWN_SFU = "unknown-sfu"
    INTERNAL_ERROR = "internal-error"
    # Room rules (room/)
    NOT_IN_ROOM = "not-in-room"
    ALREADY_JOINED = "already-joined"
    UNKNOWN_MID = "unknown-mid"
    NOT_OWNER = "not-owner"
    UNKNOWN_SID = "unknown-sid"
    ROOM_FULL = "room-full"
    ROOM_MISMATCH = "room-mismatch"
    CAPACITY_TOO_LARGE = "capacity-too-large"
    P2P_ROOM = "p2p-room"
    # The media plane (sfu/, record/)
    BAD_SDP = "bad-sdp"
    CODEC_UNSUPPORTED = "codec-unsupported"
    NOT_RECORDING = "not-recording"
    RECORD_FAILED = "record-failed"
    NO_MEDIA_PORT = "no-media-port"
    # The P2P relay (signal/relay.py) and the data-channel relay (sfu/datachannel.py)
    UNKNOWN_PEER = "unknown-peer"
    NO_CONNECTION = "no-connection"
    MESSAGE_TOO_LARGE = "message-too-large"
    BAD_MESSAGE = "bad-message"
    # Access control and limits (signal/auth.py, signal/access.py, signal/limits.py)
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate-limited"
    LIMIT_EXCEEDED = "limit-exceeded"
    # The classroom stage (signal/stage.py, sfu/local.py mute)
    UNKNOWN_KIND = "unknown-kind"
    # Cluster mode (aiosfu/cluster/, docs/cluster.md)
    CLUSTER_UNAVAILABLE = "cluster-unavailable"
    SFU_UNAVAILABLE = "sfu-unavailable"
    STALE_EPOCH = "stale-epoch"


class CodedError(Exception):
    """A refusal a client can act on: `code` goes out as errorCode, `reason` as errorReason.

    A code that is not an `ErrorCode` member fails here, where it is raised, instead of
    reaching a client as a string no document explains.
    """

    def __init__(self, code: ErrorCode, reason: str) -> None:
        code = ErrorCode(code)
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SfuError(CodedError):
    """A media-plane failure (`sfu/` and `record/`)."""


@dataclass(frozen=True)
class Published:
    answer_sdp: str
    mid: str
    sfuid: str
    # False for a data-channel-only publish: nothing to subscribe to, so not announced.
    has_media: bool = True


@dataclass(frozen=True)
class Subscribed:
    answer_sdp: str
    sid: str


@dataclass(frozen=True)
class Recording:
    """One publication recorded to one file on the SFU node that carries it."""

    rid: str
    mid: str
    uid: str  # the publisher
    file: str  # relative to that node's recording directory
    started_at: float  # Unix time
    # Known once it stopped:
    duration: float = 0.0  # seconds of media in the file
    size: int = 0  # bytes on disk; 0 means nothing was recorded and no file is left
    reason: str = ""  # requested, unpublished, shutdown, error
    error: str = ""
