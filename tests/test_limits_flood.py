"""A flood from one socket and hundreds of idle sockets: everyone else is still answered
(the latency figures are bench.flood's, in make bench)."""

from __future__ import annotations

import pytest

from bench.flood import flood
from tests.conftest import ServerProcess

pytestmark = pytest.mark.media


async def test_a_flood_and_idle_sockets_leave_other_members_answered(
    server: ServerProcess,
) -> None:
    result = await flood(server.ws_url, idle=200, seconds=3.0)
    assert result["member_requests"] >= 20  # each one answered ok (flood() checks)
    assert result["flood_answers"].get("rate-limited", 0) > 0
    assert "internal-error" not in result["flood_answers"]
    assert "peers" in (await server.stats())["signal"]  # and the server still serves
