"""Contract types to and from their protobuf messages, and coded errors across gRPC.

An `SfuError` crosses the wire as a gRPC status whose trailing metadata carries the
`ErrorCode` value, so the signal node answers its client with the code the SFU node
chose, exactly as the embedded server would.
"""

from __future__ import annotations

import grpc

from aiosfu.cluster.proto import sfu_pb2 as pb
from aiosfu.contract import ErrorCode, Recording, SfuError

ERROR_CODE_KEY = "aiosfu-error-code"

# The gRPC status an SfuError travels as: the caller's input, or the state it acts on.
_STATUS = {
    ErrorCode.BAD_SDP: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.CODEC_UNSUPPORTED: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.UNKNOWN_MID: grpc.StatusCode.NOT_FOUND,
    ErrorCode.STALE_EPOCH: grpc.StatusCode.FAILED_PRECONDITION,
}


def status_for(code: ErrorCode) -> grpc.StatusCode:
    return _STATUS.get(code, grpc.StatusCode.FAILED_PRECONDITION)


def error_from_rpc(exc: grpc.aio.AioRpcError, node: str) -> SfuError:
    """The SfuError a failed call stands for; a transport failure is `sfu-unavailable`."""
    for key, value in exc.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            try:
                return SfuError(ErrorCode(value), exc.details() or "")
            except ValueError:
                break
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return SfuError(
            ErrorCode.SFU_UNAVAILABLE,
            f"SFU node {node} did not answer in time ({exc.code().name.lower()})",
        )
    return SfuError(ErrorCode.INTERNAL_ERROR, f"SFU node {node} failed: {exc.details()}")


def recording_to_pb(r: Recording) -> pb.Recording:
    return pb.Recording(
        rid=r.rid,
        mid=r.mid,
        uid=r.uid,
        file=r.file,
        started_at=r.started_at,
        duration=r.duration,
        size=r.size,
        reason=r.reason,
        error=r.error,
    )


def recording_from_pb(m: pb.Recording) -> Recording:
    return Recording(
        rid=m.rid,
        mid=m.mid,
        uid=m.uid,
        file=m.file,
        started_at=m.started_at,
        duration=m.duration,
        size=m.size,
        reason=m.reason,
        error=m.error,
    )
