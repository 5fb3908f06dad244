"""`log_format = "json"`: a real server's lines, each one JSON object a shipper can parse."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from aiosfu.client import Client
from aiosfu.log import JsonFormatter
from tests.conftest import start_server, stop_server, wait_for


async def test_json_lines_from_a_running_server(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--log-format", "json")
    try:
        client = await Client.connect(server.ws_url, "alice")
        await client.join("class")
        await client.close()
        await wait_for(lambda: '"event":"disconnected"' in server.log(), 10)
    finally:
        stop_server(server)
    # The log is stderr; the test's file also holds stdout, where the banner goes.
    lines = [line for line in server.log().splitlines() if "in two browser tabs" not in line]
    entries = [json.loads(line) for line in lines]
    assert entries
    for entry in entries:
        assert set(entry) >= {"time", "level", "component", "event", "fields"}, entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    join = next(e for e in entries if e["event"] == "join")
    assert join["level"] == "info"
    assert join["component"] == "aiosfu.signal"
    assert join["fields"] == {"rid": "class", "uid": "alice", "members": 1}
    assert any(e["event"] == "serving" and e["component"] == "aiosfu.app" for e in entries)


def test_json_values_stay_on_one_line_and_come_back_exact() -> None:
    record = logging.LogRecord("aiosfu.x", logging.WARNING, "", 0, "join", None, None)
    rid = 'a\n{"event":"FORGED"}'
    record.fields = {"rid": rid, "uid": "\uff41lice\r", "n": 3, "path": Path("/x")}  # type: ignore[attr-defined]
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line and line.isascii()
    entry = json.loads(line)
    assert entry["fields"] == {"rid": rid, "uid": "\uff41lice\r", "n": 3, "path": "/x"}
    assert entry["level"] == "warning" and entry["event"] == "join"
