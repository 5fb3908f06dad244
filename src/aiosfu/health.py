"""`/healthz` and `/readyz`: what an orchestrator probes (docs/deployment.md).

They answer different questions, so a failing one leads to different actions:

- `/healthz` (liveness): the event loop answers HTTP. Failing it gets the process
  restarted, so it checks nothing that a restart would not fix (no dependency).
- `/readyz` (readiness): the process should be sent new clients. It is 503 before start-up
  has finished, once shutdown has begun, and while any registered check names a reason
  (a component adds its own with `add_readiness_check`). Failing it only takes the
  process out of the load balancer; the peers it has keep their rooms.

Both are plain JSON, unauthenticated (probes carry no token) and say nothing about rooms
or peers, so exposing them leaks nothing an attacker could use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

# A readiness check returns None when fine, else why the process is not ready.
ReadinessCheck = Callable[[], str | None]


@dataclass
class Health:
    started: bool = False
    stopping: bool = False
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    def reasons(self) -> list[str]:
        found = []
        if not self.started:
            found.append("starting")
        if self.stopping:
            found.append("stopping")
        for name, check in self.checks.items():
            try:
                reason = check()
            except Exception as exc:  # a broken check means "not ready", never a 500
                reason = f"check failed: {exc!r}"
            if reason:
                found.append(f"{name}: {reason}")
        return found


HEALTH_KEY = web.AppKey("health", Health)


def add_readiness_check(app: web.Application, name: str, check: ReadinessCheck) -> None:
    app[HEALTH_KEY].checks[name] = check


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    reasons = request.app[HEALTH_KEY].reasons()
    if reasons:
        return web.json_response({"status": "not-ready", "reasons": reasons}, status=503)
    return web.json_response({"status": "ready"})


def add_health_routes(app: web.Application) -> None:
    health = Health()
    app[HEALTH_KEY] = health

    async def started(app: web.Application) -> None:
        health.started = True

    async def stopping(app: web.Application) -> None:
        health.stopping = True

    # `stopping` goes first so every later shutdown step (closing peers) reads as not ready.
    app.on_startup.append(started)
    app.on_shutdown.insert(0, stopping)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
