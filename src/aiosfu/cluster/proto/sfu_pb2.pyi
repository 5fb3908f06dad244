from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RoomRef(_message.Message):
    __slots__ = ("rid", "epoch")
    RID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    rid: str
    epoch: int
    def __init__(self, rid: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("room", "uid", "offer_sdp", "minfo_json")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    OFFER_SDP_FIELD_NUMBER: _ClassVar[int]
    MINFO_JSON_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    uid: str
    offer_sdp: str
    minfo_json: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., uid: _Optional[str] = ..., offer_sdp: _Optional[str] = ..., minfo_json: _Optional[str] = ...) -> None: ...

class PublishReply(_message.Message):
    __slots__ = ("answer_sdp", "mid", "sfuid", "has_media")
    ANSWER_SDP_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    SFUID_FIELD_NUMBER: _ClassVar[int]
    HAS_MEDIA_FIELD_NUMBER: _ClassVar[int]
    answer_sdp: str
    mid: str
    sfuid: str
    has_media: bool
    def __init__(self, answer_sdp: _Optional[str] = ..., mid: _Optional[str] = ..., sfuid: _Optional[str] = ..., has_media: _Optional[bool] = ...) -> None: ...

class UnpublishRequest(_message.Message):
    __slots__ = ("room", "mid")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    mid: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., mid: _Optional[str] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("room", "uid", "mid", "offer_sdp")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    OFFER_SDP_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    uid: str
    mid: str
    offer_sdp: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., uid: _Optional[str] = ..., mid: _Optional[str] = ..., offer_sdp: _Optional[str] = ...) -> None: ...

class SubscribeReply(_message.Message):
    __slots__ = ("answer_sdp", "sid")
    ANSWER_SDP_FIELD_NUMBER: _ClassVar[int]
    SID_FIELD_NUMBER: _ClassVar[int]
    answer_sdp: str
    sid: str
    def __init__(self, answer_sdp: _Optional[str] = ..., sid: _Optional[str] = ...) -> None: ...

class UnsubscribeRequest(_message.Message):
    __slots__ = ("room", "sid")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    SID_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    sid: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., sid: _Optional[str] = ...) -> None: ...

class PauseRequest(_message.Message):
    __slots__ = ("room", "mid", "kind", "paused")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    mid: str
    kind: str
    paused: bool
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., mid: _Optional[str] = ..., kind: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...

class ClosePeerRequest(_message.Message):
    __slots__ = ("room", "uid")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    uid: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., uid: _Optional[str] = ...) -> None: ...

class RecordingRequest(_message.Message):
    __slots__ = ("room", "mid")
    ROOM_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    room: RoomRef
    mid: str
    def __init__(self, room: _Optional[_Union[RoomRef, _Mapping]] = ..., mid: _Optional[str] = ...) -> None: ...

class Recording(_message.Message):
    __slots__ = ("rid", "mid", "uid", "file", "started_at", "duration", "size", "reason", "error")
    RID_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    rid: str
    mid: str
    uid: str
    file: str
    started_at: float
    duration: float
    size: int
    reason: str
    error: str
    def __init__(self, rid: _Optional[str] = ..., mid: _Optional[str] = ..., uid: _Optional[str] = ..., file: _Optional[str] = ..., started_at: _Optional[float] = ..., duration: _Optional[float] = ..., size: _Optional[int] = ..., reason: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsReply(_message.Message):
    __slots__ = ("stats_json",)
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    stats_json: str
    def __init__(self, stats_json: _Optional[str] = ...) -> None: ...

class EventsRequest(_message.Message):
    __slots__ = ("subscriber",)
    SUBSCRIBER_FIELD_NUMBER: _ClassVar[int]
    subscriber: str
    def __init__(self, subscriber: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("publication_ended", "subscription_ended", "recording_started", "recording_stopped", "publication_connected")
    PUBLICATION_ENDED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ENDED_FIELD_NUMBER: _ClassVar[int]
    RECORDING_STARTED_FIELD_NUMBER: _ClassVar[int]
    RECORDING_STOPPED_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    publication_ended: PublicationEnded
    subscription_ended: SubscriptionEnded
    recording_started: Recording
    recording_stopped: Recording
    publication_connected: PublicationConnected
    def __init__(self, publication_ended: _Optional[_Union[PublicationEnded, _Mapping]] = ..., subscription_ended: _Optional[_Union[SubscriptionEnded, _Mapping]] = ..., recording_started: _Optional[_Union[Recording, _Mapping]] = ..., recording_stopped: _Optional[_Union[Recording, _Mapping]] = ..., publication_connected: _Optional[_Union[PublicationConnected, _Mapping]] = ...) -> None: ...

class PublicationConnected(_message.Message):
    __slots__ = ("rid", "mid")
    RID_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    rid: str
    mid: str
    def __init__(self, rid: _Optional[str] = ..., mid: _Optional[str] = ...) -> None: ...

class PublicationEnded(_message.Message):
    __slots__ = ("rid", "mid", "reason")
    RID_FIELD_NUMBER: _ClassVar[int]
    MID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rid: str
    mid: str
    reason: str
    def __init__(self, rid: _Optional[str] = ..., mid: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SubscriptionEnded(_message.Message):
    __slots__ = ("rid", "sid", "reason")
    RID_FIELD_NUMBER: _ClassVar[int]
    SID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    rid: str
    sid: str
    reason: str
    def __init__(self, rid: _Optional[str] = ..., sid: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
