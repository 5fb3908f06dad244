"""A data-channel peer in its own process, so a test can stall it (SIGSTOP) like a slow
receiver on a bad network. Prints one line per event on stdout:

    ready                  joined, publishing a data-only "chat" channel
    dropped N              the relay skipped N messages while we were too slow
    end RECEIVED DROPPED   the sender's "end" arrived: totals so far

Usage: python -m tests.datachannel_peer WS_URL UID ROOM
"""

from __future__ import annotations

import asyncio
import sys

from aiosfu.client import Client


async def main(url: str, uid: str, rid: str) -> None:
    client = await Client.connect(url, uid, ice_ips=["127.0.0.1"])
    await client.join(rid)
    publication = await client.publish(rid, [], data_channels=["chat"])
    chat = publication.channels["chat"]
    await chat.wait_open()
    print("ready", flush=True)
    received = reported = 0
    while True:
        message = await chat.recv(timeout=3600)
        if chat.dropped != reported:
            print(f"dropped {chat.dropped - reported}", flush=True)
            reported = chat.dropped
        if message.data == "end":
            print(f"end {received} {chat.dropped}", flush=True)
            break
        received += 1
    await client.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
