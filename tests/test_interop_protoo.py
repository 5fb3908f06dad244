"""protoo's own clients: protoo-client from npm (what mediasoup's demo builds on) and a
browser page that opens `new WebSocket(url, 'protoo')`, as go-protoo's clients do.

Both ask for the WebSocket subprotocol `protoo`; a server that does not answer it fails
the handshake and the client gives up.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.conftest import ServerProcess
from tests.js_peers import require_node_modules, run_node_script


async def test_protoo_client_joins_is_refused_with_our_code_and_hears_notifications(
    server: ServerProcess,
) -> None:
    require_node_modules("protoo-client")
    events = await run_node_script("protoo_peer.js", server.ws_url, "r1")
    by_event = {}
    for event in events:
        by_event.setdefault(event["event"], []).append(event)
    assert "error" not in by_event, by_event["error"][0]["message"] + "\n" + server.log()[-3000:]
    assert by_event["open"] == [{"event": "open", "uid": "alice"}]
    joins = {e["uid"]: e["response"] for e in by_event["join"]}
    assert joins["alice"] == {"pubs": [], "users": []}
    assert joins["bob"]["users"] == [
        {"signalid": joins["bob"]["users"][0]["signalid"], "rid": "r1", "uid": "alice"}
    ]

    # A refused request surfaces as protoo-client's own error, carrying our errorCode.
    (subscribe,) = by_event["subscribe"]
    assert subscribe["ok"] is False
    assert subscribe["code"] == "unknown-mid"
    assert "nobody#0" in subscribe["message"]

    assert by_event["keepalive"][0]["response"] == {}
    heard = [(n["method"], n["data"]) for n in by_event["notification"] if n["uid"] == "alice"]
    assert ("peer-join", {"rid": "r1", "uid": "bob", "bizid": ""}) in heard
    assert ("broadcast", {"rid": "r1", "uid": "bob", "data": {"text": "hello from bob"}}) in heard
    assert ("peer-leave", {"rid": "r1", "uid": "bob"}) in heard
    assert "done" in by_event


@pytest.mark.browser
async def test_browser_websocket_with_protoo_subprotocol(
    server: ServerProcess, browser: Browser
) -> None:
    page = await (await browser.new_context()).new_page()
    await page.goto(server.http_url)
    result = await page.evaluate(
        """(url) => new Promise((resolve) => {
            const ws = new WebSocket(url, 'protoo');
            ws.onerror = () => resolve({error: 'handshake failed'});
            ws.onopen = () => ws.send(JSON.stringify(
                {request: true, id: 1, method: 'join', data: {rid: 'r1'}}));
            ws.onmessage = (m) => { resolve({protocol: ws.protocol, reply: JSON.parse(m.data)});
                                    ws.close(); };
        })""",
        f"{server.ws_url}?peer=carol",
    )
    assert result.get("protocol") == "protoo", result
    assert result["reply"] == {
        "response": True,
        "id": 1,
        "ok": True,
        "data": {"pubs": [], "users": []},
    }
