"""A server on the far side of a real link: its own network namespace, joined to the
test's by a veth pair, so nftables on the test's end can limit or drop what crosses it.

The test runs as root in a namespace of its own (the Makefile's LOOPBACK_ONLY); the
server's namespace is made here with `unshare --net` and gets one end of the pair. No
packet leaves the machine.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, ServerProcess, free_port

TEST_ADDRESS = "10.77.0.1"
SERVER_ADDRESS = "10.77.0.2"
TABLE = "aiosfu_test"


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def nft(script: str, pid: int | None = None) -> None:
    """Run an nft script here, or in the network namespace of process `pid`."""
    enter = [] if pid is None else ["nsenter", f"--net=/proc/{pid}/ns/net"]
    subprocess.run(
        [*enter, "nft", "-f", "-"], input=script, check=True, capture_output=True, text=True
    )


@dataclass
class RemoteServer(ServerProcess):
    """`aiosfu serve` in its own namespace at SERVER_ADDRESS, behind veth `link`."""

    link: str = ""

    @property
    def http_url(self) -> str:
        return f"http://{SERVER_ADDRESS}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{SERVER_ADDRESS}:{self.port}/ws"


def start_remote_server(tmp_path: Path, *extra: str) -> RemoteServer:
    port = free_port()
    link = f"vt{secrets.token_hex(3)}"
    peer = f"{link}s"
    log_path = tmp_path / f"server-{port}.log"
    script = (
        f"while ! ip link show {peer} >/dev/null 2>&1; do sleep 0.02; done; "
        f"ip link set lo up && ip addr add {SERVER_ADDRESS}/24 dev {peer} && "
        f'ip link set {peer} up && exec "$0" "$@"'
    )
    cmd = [
        "unshare",
        "--net",
        "sh",
        "-c",
        script,
        sys.executable,
        "-m",
        "aiosfu",
        "serve",
        "--host",
        SERVER_ADDRESS,
        "--port",
        str(port),
        "--ice-ip",
        SERVER_ADDRESS,
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    server = RemoteServer(
        proc=proc, port=port, log_path=log_path, extra_args=list(extra), link=link
    )
    try:
        # The child has its own namespace once unshare ran; before that, a link moved
        # "into" its pid would land in ours.
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{proc.pid}/ns/net") == own:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"no namespace for the server:\n{server.log()}")
            time.sleep(0.01)
        veth = ("ip", "link", "add", link, "type", "veth", "peer", "name", peer)
        run(*veth, "netns", str(proc.pid))
        run("ip", "addr", "add", f"{TEST_ADDRESS}/24", "dev", link)
        run("ip", "link", "set", link, "up")
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()}")
            try:
                with socket.create_connection((SERVER_ADDRESS, port), timeout=0.2):
                    return server
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{server.log()}") from None
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def stop_remote_server(server: RemoteServer) -> None:
    from tests.conftest import stop_server

    stop_server(server)
    subprocess.run(["ip", "link", "del", server.link], capture_output=True)
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)


def impair(server: RemoteServer, rules: list[str]) -> None:
    """Replace the link's impairments with `rules`: nft rule bodies after a direction,
    e.g. `down udp dport 5000 limit rate over 75 kbytes/second drop`. `down` (server to
    browsers) is filtered where the browsers receive, `up` where the server receives:
    both as packets arriving off the link, as a lossy network drops them (a drop in the
    sender's own output hook would fail its send call instead, which it may retry)."""
    clear_impairments(server)
    for direction, pid in (("down", None), ("up", server.pid)):
        lines = [
            f"table inet {TABLE} {{",
            "  chain in { type filter hook input priority 0; policy accept; }",
            "}",
        ]
        for rule in rules:
            where, body = rule.split(" ", 1)
            if where == direction:
                body = body.replace(" drop", " counter drop")
                lines.append(f"add rule inet {TABLE} in {body}")
        nft("\n".join(lines) + "\n", pid)


def impairment_counters(server: RemoteServer) -> list[str]:
    """Each rule with its packet counter, for failure messages."""
    lines = []
    for where, enter in (("down", []), ("up", ["nsenter", f"--net=/proc/{server.pid}/ns/net"])):
        listed = subprocess.run(
            [*enter, "nft", "list", "table", "inet", TABLE], capture_output=True, text=True
        )
        lines += [f"{where}: {x.strip()}" for x in listed.stdout.splitlines() if "counter" in x]
    return lines


def clear_impairments(server: RemoteServer) -> None:
    subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True)
    if server.proc.poll() is None:
        subprocess.run(
            [
                "nsenter",
                f"--net=/proc/{server.pid}/ns/net",
                "nft",
                "delete",
                "table",
                "inet",
                TABLE,
            ],
            capture_output=True,
        )
