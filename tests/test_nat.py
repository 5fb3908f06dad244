"""1:1 NAT (`--public-ip`): the server binds a private address and announces a public one.

The cloud case is rebuilt with loopback addresses and nftables in the test's own network
namespace: the server's interface address is 127.0.0.2, the "public" address 127.0.0.3 is
mapped onto it (DNAT in, SNAT out, as a provider's 1:1 NAT does), and anything sent to
127.0.0.2 directly is dropped, and the server cannot open flows to clients (they sit behind
their own NAT), so media can only flow if clients use the announced address.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from aiosfu.client import Client
from aiosfu.sfu.nat import announce_public, nat_mapping
from tests.browser import DemoTab, open_tab
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import PatternTrack, ToneTrack

PRIVATE, PUBLIC = "127.0.0.2", "127.0.0.3"
TABLE = "aiosfu_nat_test"

ANSWER = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=video 50000 UDP/TLS/RTP/SAVPF 96\r\n"
    "c=IN IP4 10.0.0.5\r\n"
    "a=candidate:1 1 UDP 2130706431 10.0.0.5 50000 typ host\r\n"
    "a=candidate:2 1 UDP 2130706431 192.168.1.9 50002 typ host\r\n"
    "a=candidate:3 1 UDP 1694498815 198.51.100.1 50004 typ srflx raddr 10.0.0.5 rport 50000\r\n"
)


def test_announce_public_rewrites_only_mapped_host_candidates() -> None:
    out = announce_public(ANSWER, {"10.0.0.5": "203.0.113.7"})
    assert "c=IN IP4 203.0.113.7\r\n" in out
    assert "a=candidate:1 1 UDP 2130706431 203.0.113.7 50000 typ host\r\n" in out
    assert "192.168.1.9 50002 typ host" in out, "an unmapped address is left alone"
    assert "198.51.100.1 50004 typ srflx raddr 10.0.0.5" in out, "only host candidates move"
    assert "10.0.0.5 50000 typ host" not in out
    assert announce_public(ANSWER, {}) == ANSWER


def test_nat_mapping_from_public_ip_and_explicit_pairs() -> None:
    assert nat_mapping(["10.0.0.5", "10.0.1.5"], "203.0.113.7") == {
        "10.0.0.5": "203.0.113.7",
        "10.0.1.5": "203.0.113.7",
    }
    explicit = nat_mapping(["10.0.0.5"], "203.0.113.7", {"10.0.0.5": "198.51.100.2"})
    assert explicit == {"10.0.0.5": "198.51.100.2"}, "an explicit pair wins over public_ip"
    assert nat_mapping(["10.0.0.5"]) == {}
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        nat_mapping(["10.0.0.5"], "not-an-ip")
    with pytest.raises(ValueError, match="IPv4 and IPv6 mixed"):
        nat_mapping(["10.0.0.5"], "2001:db8::1")


def _nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script.encode(), check=True)


def _only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture
def one_to_one_nat() -> Iterator[None]:
    """DNAT PUBLIC → PRIVATE for what clients send, SNAT back for what the server sends.

    The server may only answer flows a client opened, as with clients behind their own
    NAT: otherwise its connectivity checks would reach them unasked and ICE would succeed
    through a peer-reflexive candidate even with the private address announced.
    """
    if shutil.which("nft") is None:
        pytest.fail("nftables is missing: `make install` installs it")
    if not _only_loopback():
        pytest.skip("changes packet filtering: runs only in a loopback-only namespace")
    _nft(
        f"""
        table ip {TABLE} {{
            chain raw_out {{
                type filter hook output priority -300; policy accept;
                ip daddr {PRIVATE} meta l4proto udp drop
            }}
            chain nat_out {{
                type nat hook output priority -100; policy accept;
                ip daddr {PUBLIC} dnat to {PRIVATE}
            }}
            chain firewall_out {{
                type filter hook output priority 0; policy accept;
                ip saddr {PRIVATE} ct state new meta l4proto udp drop
            }}
            chain nat_post {{
                type nat hook postrouting priority 100; policy accept;
                ip saddr {PRIVATE} snat to {PUBLIC}
            }}
        }}
        """
    )
    try:
        yield
    finally:
        _nft(f"delete table ip {TABLE}")


@pytest.fixture
def nat_server(tmp_path: Path, one_to_one_nat: None) -> Iterator[ServerProcess]:
    server = start_server(tmp_path, "--public-ip", PUBLIC, ice_ips=(PRIVATE,))
    yield server
    stop_server(server)


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


@pytest.mark.media
async def test_answers_announce_the_public_address(nat_server: ServerProcess) -> None:
    client = await Client.connect(nat_server.ws_url, "teacher")
    try:
        await client.join("class")
        publication = await client.publish("class", [ToneTrack(), PatternTrack(320, 240)])
        sdp = publication.pc.remoteDescription.sdp
        assert _candidate_addresses(sdp) == {PUBLIC}
        assert f"c=IN IP4 {PRIVATE}" not in sdp
        await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    finally:
        await client.close()
    assert f"announced={PRIVATE}->{PUBLIC}" in nat_server.log()


DEMO_STATE = (
    "() => { const d = window.aiosfuDemo;"
    " return d && {state: d.state, error: d.error, localMid: d.localMid,"
    " subscriptions: d.subscriptions.map((s) => ({...s}))}; }"
)


@pytest.mark.browser
async def test_chromium_publishes_and_subscribes_through_the_mapping(
    nat_server: ServerProcess, browser: Browser
) -> None:
    async def tab(name: str, query: str) -> DemoTab:
        return await open_tab(
            browser,
            f"{nat_server.http_url}/?room=r1&name={name}&autojoin=1{query}",
            name,
            DemoTab,
            state_script=DEMO_STATE,
            fail_on_error_state=True,
        )

    alice = await tab("alice", "")
    mid = (await alice.wait_demo(lambda d: d.get("localMid"), "publish camera"))["localMid"]
    bob = await tab("bob", "&publish=0")
    await bob.wait_demo(
        lambda d: any(s["mid"] == mid for s in d.get("subscriptions", [])), "subscribe"
    )
    decoded: dict = {}

    async def frames() -> bool:
        nonlocal decoded
        stats = await bob.page.evaluate("() => window.aiosfuDemo.videoStats()")
        decoded = next((s for s in stats if s["mid"] == mid), {})
        return decoded.get("framesDecoded", 0) >= 60 and decoded.get("frameWidth") == 640

    try:
        await wait_for(frames, timeout=15, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(
            f"no video through the NAT mapping: {decoded}\n" + nat_server.log()[-3000:]
        ) from exc
