"""`aiosfu peer answer|offer`: seed 001's two command-line peers, end to end, as processes."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ServerProcess, free_port, wait_for

pytestmark = pytest.mark.media

SENT = re.compile(r"^\S+ \S+ (answer|offer): Sending '((?:answer|offer)-\d+)'$")
GOT = re.compile(r"^\S+ \S+ (answer|offer): Message from DataChannel 'data': '(\S+)'$")


async def peer(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "aiosfu", "peer", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float = 30) -> tuple[int, str]:
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, output.decode()


def exchanged(output: str) -> tuple[list[str], list[str]]:
    lines = output.splitlines()
    sent = [m.group(2) for line in lines if (m := SENT.match(line))]
    got = [m.group(2) for line in lines if (m := GOT.match(line))]
    return sent, got


async def test_answer_and_offer_peers_exchange_messages_through_the_server(
    server: ServerProcess,
) -> None:
    common = ["--server", server.ws_url, "--interval", "0.2", "--count", "5"]
    answer = await peer("answer", "--id", "answer-peer-1", *common)
    assert answer.stdout is not None
    registered = await asyncio.wait_for(answer.stdout.readline(), 15)
    registered += await asyncio.wait_for(answer.stdout.readline(), 15)
    assert b"registered as answer-peer-1" in registered

    offer = await peer("offer", "--target", "answer-peer-1", "--id", "offer-peer-1", *common)
    (offer_code, offer_out), (answer_code, answer_out) = await asyncio.gather(
        finish(offer), finish(answer)
    )
    assert (offer_code, answer_code) == (0, 0), offer_out + answer_out
    offer_sent, offer_got = exchanged(offer_out)
    answer_sent, answer_got = exchanged(answer_out)
    assert len(offer_sent) == len(answer_sent) == 5
    assert answer_got == offer_sent and offer_got == answer_sent  # every message, in order
    assert all(m.startswith("offer-") for m in offer_sent)
    assert "recv offer message from offer-peer-1" in answer_out
    assert "recv answer(sdp) message from answer-peer-1" in offer_out
    assert "Peer Connection State has changed: connected" in offer_out

    # The server relayed signaling only: it never held a media or data transport.
    stats = await server.stats()
    assert stats["signal"]["p2p"]["relayed"]["offer"] == 1
    assert stats["signal"]["p2p"]["relayed"]["answer"] == 1
    assert "event=publish" not in server.log() and "datachannel-open" not in server.log()
    await wait_for(lambda: _gone(server), 10)


async def _gone(server: ServerProcess) -> bool:
    stats = await server.stats()
    return stats["signal"]["peers"] == 0 and stats["signal"]["p2p"]["pairs"] == 0


async def test_offer_to_an_unknown_id_or_a_dead_server_fails_clearly(
    server: ServerProcess,
) -> None:
    code, output = await finish(await peer("offer", "--server", server.ws_url, "--target", "x"))
    assert code == 1
    assert "peer 'x' is not connected (unknown-peer)" in output

    dead = f"ws://127.0.0.1:{free_port()}/ws"
    code, output = await finish(await peer("answer", "--id", "a", "--server", dead))
    assert code == 1 and "cannot reach the signaling server" in output
    assert "Traceback" not in output

    code, output = await finish(await peer("offer"))
    assert code == 2 and "--target" in output
