"""HTTPS and WSS: Chromium opens the demo page over TLS at an address that is not
loopback (a secure context, so the camera is allowed), publishes, and a second page
decodes. The certificate is the server's self-signed one, checked by its fingerprint."""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser
from playwright.async_api import Error as PlaywrightError

from aiosfu.tls import self_signed, server_context
from tests.conftest import ServerProcess, start_server, stop_server, wait_for

pytestmark = pytest.mark.browser

ADDRESS = "10.77.0.1"


@pytest.fixture
def lan_address() -> Iterator[str]:
    """A non-loopback address on a veth, only inside a namespace of the test's own."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    if [line.split(":")[1].strip() for line in links.splitlines()] != ["lo"]:
        pytest.skip("needs a network namespace with only loopback (see make test)")
    subprocess.run(
        ["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1"], check=True
    )
    subprocess.run(["ip", "addr", "add", f"{ADDRESS}/24", "dev", "lan0"], check=True)
    for link in ("lan0", "lan1"):
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    # Chromium aborts a navigation under way when the host's links change
    # (ERR_NETWORK_CHANGED): let the veth's carrier come up, and its news settle, first.
    deadline = time.monotonic() + 10
    while (
        "LOWER_UP"
        not in subprocess.run(
            ["ip", "-o", "link", "show", "lan0"], capture_output=True, text=True
        ).stdout
    ):
        assert time.monotonic() < deadline, "lan0 never came up"
        time.sleep(0.05)
    time.sleep(1.0)
    yield ADDRESS
    subprocess.run(["ip", "link", "del", "lan0"], check=False)


@pytest.fixture
def tls_server(tmp_path: Path, lan_address: str) -> Iterator[ServerProcess]:
    server = start_server(tmp_path, "--tls-self-signed", ice_ips=(lan_address,), host=lan_address)
    yield server
    stop_server(server)


def test_self_signed_certificate_names_the_hosts() -> None:
    cert, key, fingerprint = self_signed(["class.example.org", "192.0.2.7"])
    context = server_context(cert, key)
    assert isinstance(context, ssl.SSLContext)
    pem = cert.read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert fingerprint == ":".join(re.findall("..", hashlib.sha256(der).hexdigest().upper()))
    assert oct(key.stat().st_mode & 0o777) == "0o600"


async def test_chromium_publishes_and_decodes_over_https(
    tls_server: ServerProcess, lan_address: str, browser: Browser
) -> None:
    await wait_for(lambda: "fingerprint" in tls_server.log(), 5)
    printed = re.search(r"fingerprint ([0-9A-F:]+)", tls_server.log()).group(1)
    url = re.search(r"open (https://\S+)", tls_server.log()).group(1)
    assert url == f"https://{lan_address}:{tls_server.port}/"
    pem = ssl.get_server_certificate((lan_address, tls_server.port))
    served = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    assert printed.replace(":", "") == served

    pages = []
    for query in ("room=r&name=alice&autojoin=1", "room=r&name=bob&autojoin=1&publish=0"):
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        try:
            await page.goto(f"{url}?{query}")
        except PlaywrightError as exc:  # a link change reached Chromium late: once more
            if "ERR_NETWORK_CHANGED" not in str(exc):
                raise
            await page.goto(f"{url}?{query}")
        pages.append(page)
    alice, bob = pages
    assert await alice.evaluate("() => window.isSecureContext")
    await alice.wait_for_function("() => window.aiosfuDemo.localMid", timeout=15000)
    mid = await alice.evaluate("() => window.aiosfuDemo.localMid")

    async def decoded() -> bool:
        stats = await bob.evaluate("() => window.aiosfuDemo.videoStats()")
        return any(s["mid"] == mid and s["framesDecoded"] >= 30 for s in stats)

    await wait_for(decoded, timeout=20, interval=0.2)
    assert await bob.evaluate("() => location.protocol") == "https:"
