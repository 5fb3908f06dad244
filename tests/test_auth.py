"""Access tokens: what a token proves, and every way a token must fail to prove it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import jwt
import pytest

from aiosfu.signal.auth import Authenticator, AuthError, bearer_token, mint_token
from aiosfu.signal.grants import Grants, for_role, source_of, updated

SECRET = "school-a-secret-0123456789abcdef0123"
OTHER_SECRET = "school-b-secret-0123456789abcdef0123"
NOW = 1_800_000_000.0

AUTH = Authenticator({"school-a": {"APIa": SECRET, "APIa2": SECRET + "x"}, "school-b": {}})


def teacher_token(**overrides: object) -> str:
    claims: dict[str, object] = {
        "iss": "APIa",
        "sub": "alice",
        "nbf": int(NOW) - 60,
        "exp": int(NOW) + 3600,
        "name": "Alice",
        "metadata": '{"grade": 7}',
        "video": for_role("teacher", "math-101").claim(),
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


def refused(token: str, uid: str | None = None) -> str:
    with pytest.raises(AuthError) as info:
        AUTH.verify(token, uid, now=NOW)
    assert info.value.code == "unauthorized"
    return info.value.reason


def test_good_token_names_the_peer_its_institution_and_grants() -> None:
    identity = AUTH.verify(teacher_token(), "alice", now=NOW)
    assert identity.uid == "alice"
    assert identity.bizid == "school-a"
    assert identity.key == "APIa"
    assert identity.name == "Alice"
    assert identity.metadata == '{"grade": 7}'
    assert identity.grants.room == "math-101"
    assert identity.grants.roomAdmin and identity.grants.roomRecord and identity.grants.roomJoin


def test_a_second_key_of_the_institution_works_during_rotation() -> None:
    token = mint_token(SECRET + "x", "APIa2", "bob", for_role("student", "math-101"), now=NOW)
    assert AUTH.verify(token, "bob", now=NOW).bizid == "school-a"


def test_expired() -> None:
    assert "expired" in refused(teacher_token(exp=int(NOW) - 30))


def test_expired_by_the_real_clock() -> None:
    token = mint_token(SECRET, "APIa", "alice", Grants(), ttl=-60)
    with pytest.raises(AuthError, match="expired"):
        AUTH.verify(token)


def test_not_yet_valid() -> None:
    assert "not valid yet" in refused(teacher_token(nbf=int(NOW) + 600))


def test_within_the_clock_leeway_is_accepted() -> None:
    AUTH.verify(teacher_token(nbf=int(NOW) + 5), now=NOW)


def test_wrong_key() -> None:
    forged = jwt.encode(
        jwt.decode(teacher_token(), options={"verify_signature": False}), OTHER_SECRET, "HS256"
    )
    assert "Signature" in refused(forged)


def test_unknown_key() -> None:
    assert "known API key" in refused(teacher_token(iss="APIz"))
    assert "known API key" in refused(teacher_token(iss=None))


def test_uid_mismatch() -> None:
    assert "not 'mallory'" in refused(teacher_token(), "mallory")


def test_tampered_payload() -> None:
    header, payload, signature = teacher_token(video=for_role("student", "math-101").claim()).split(
        "."
    )
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["video"]["roomAdmin"] = True
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert "Signature" in refused(f"{header}.{forged}.{signature}")


def test_alg_none() -> None:
    claims = jwt.decode(teacher_token(), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert refused(unsigned)
    # and the same with an HS256-looking header but no signature
    header, payload, _ = teacher_token().split(".")
    assert refused(f"{header}.{payload}.")


def test_missing_claims() -> None:
    assert "exp" in refused(teacher_token(exp=None))
    assert "nbf" in refused(teacher_token(nbf=None))
    assert "sub" in refused(teacher_token(sub=None))


def test_garbage() -> None:
    assert refused("not-a-token")
    assert refused("")


def test_malformed_grants() -> None:
    assert "grants" in refused(teacher_token(video={"canPublish": "yes"}))
    assert "grants" in refused(teacher_token(video={"canPublishSources": ["webcam"]}))


def test_wrong_room_is_a_grant_question_not_a_signature_one() -> None:
    # The token itself is good; the join refuses it (tests/test_access.py).
    assert AUTH.verify(teacher_token(), now=NOW).grants.room == "math-101"


def test_secrets_must_be_long_and_keys_unique() -> None:
    with pytest.raises(ValueError, match="shorter"):
        Authenticator({"a": {"k": "short"}})
    with pytest.raises(ValueError, match="two institutions"):
        Authenticator({"a": {"k": SECRET}, "b": {"k": SECRET}})
    assert Authenticator().open and not AUTH.open


def test_livekit_defaults() -> None:
    grants = Grants()
    assert grants.canPublish and grants.canSubscribe and grants.canPublishData
    assert not (grants.roomJoin or grants.roomAdmin or grants.roomRecord or grants.hidden)
    assert grants.may_publish("screen_share")
    camera_only = Grants(canPublishSources=("camera",))
    assert camera_only.may_publish("camera") and not camera_only.may_publish("microphone")


def test_roles() -> None:
    teacher, student, observer = (for_role(r, "r") for r in ("teacher", "student", "observer"))
    assert teacher.roomAdmin and teacher.canPublish and teacher.roomRecord
    assert student.canSubscribe and student.canPublishData and not student.canPublish
    assert not student.roomAdmin and not student.roomRecord
    assert observer.hidden and observer.canSubscribe
    assert not observer.canPublish and not observer.canPublishData
    on_stage = updated(student, {"canPublish": True, "room": "elsewhere"})
    assert on_stage.canPublish and on_stage.room == "r"


def test_sources_from_seed_002_media_info() -> None:
    assert source_of("video", {"videotype": 0}) == "camera"
    assert source_of("video", {"videotype": 1}) == "screen_share"
    assert source_of("audio", {}) == "microphone"
    assert source_of("audio", {"audiotype": 1}) == "screen_share_audio"


def test_bearer_token_from_query_or_header() -> None:
    assert bearer_token({"token": "q"}, {"Authorization": "Bearer h"}) == "q"
    assert bearer_token({}, {"Authorization": "Bearer h"}) == "h"
    assert bearer_token({}, {"Authorization": "Basic h"}) is None
    assert bearer_token({}, {}) is None


def test_token_command_prints_a_token_the_server_accepts() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiosfu",
            "token",
            "--key",
            "APIa",
            "--secret",
            SECRET,
            "--room",
            "math-101",
            "--uid",
            "alice",
            "--role",
            "teacher",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    identity = AUTH.verify(out, "alice")
    assert identity.grants == for_role("teacher", "math-101")
