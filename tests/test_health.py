"""/healthz and /readyz: what the Kubernetes manifests and the compose file probe."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiosfu.health import HEALTH_KEY, add_health_routes, add_readiness_check
from tests.conftest import start_server, stop_server


async def test_a_running_server_is_live_and_ready(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.http_url}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ok"}
            async with http.get(f"{server.http_url}/readyz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ready"}
    finally:
        stop_server(server)


async def test_readiness_fails_with_reasons_while_liveness_holds() -> None:
    app = web.Application()
    add_health_routes(app)
    broken: list[str] = []
    add_readiness_check(app, "registry", lambda: broken[0] if broken else None)

    def explode() -> str | None:
        raise RuntimeError("boom")

    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/readyz")).status == 200

        broken.append("etcd unreachable")
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {
            "status": "not-ready",
            "reasons": ["registry: etcd unreachable"],
        }
        assert (await client.get("/healthz")).status == 200

        broken.clear()
        add_readiness_check(app, "broken", explode)
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["reasons"][0].startswith("broken: check failed")

        app[HEALTH_KEY].checks.clear()
        await app.shutdown()  # what SIGTERM starts: readiness goes first
        response = await client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["reasons"] == ["stopping"]
        assert (await client.get("/healthz")).status == 200
