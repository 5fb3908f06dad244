"""`python -m bench.cluster`: what signaling across nodes costs.

Against a cluster on loopback (real etcd, NATS, Redis; two signal nodes, two SFU nodes):

- **join → stream-add**: N plain seed-002 WebSocket peers (no media) join one room, half
  on each signal node; then one aiortc publisher on signal node 1 publishes, and each
  peer's `stream-add` arrival is timed from the start of the publish call (which includes
  the publisher's own offer and ICE gathering, the same for every peer).
  Figures: p50/p99 for the peers on the publisher's signal node and for those on the
  other one (the latter cross NATS). Join request → response p50/p99 too.
- **gRPC overhead**: the publish and subscribe request latency (request sent → response
  read) through `aiosfu serve` (the SFU in-process) and through a cluster signal node (the
  SFU node over gRPC), runs interleaved A B B A, medians with their spread.

Loopback only: run it inside a network namespace that has nothing but `lo`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from aiosfu.client import Client
from tests.cluster import start_cluster, wait_for_discovery
from tests.conftest import start_server, stop_server
from tests.media import PatternTrack

# After the join storm, the peers still read the peer-joins it caused; a stream-add timed
# before they are through measures their backlog, not the cluster.
SETTLE = 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def plain_peer(url: str, uid: str) -> tuple[aiohttp.ClientSession, Any]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(f"{url}?peer={uid}")
    return http, ws


async def join_then_wait_stream_add(
    url: str, uid: str, rid: str, joined: asyncio.Event, results: dict[str, Any]
) -> None:
    http, ws = await plain_peer(url, uid)
    try:
        sent = time.perf_counter()
        await ws.send_json({"request": True, "id": 1, "method": "join", "data": {"rid": rid}})
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame.get("response"):
                results["join"].append(time.perf_counter() - sent)
                break
        joined.set()
        while True:
            frame = json.loads((await ws.receive()).data)
            if frame.get("method") == "stream-add":
                results["stream_add"].append((uid, time.perf_counter()))
                break
    finally:
        await ws.close()
        await http.close()


async def fanout(peers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        cluster = start_cluster(Path(directory))
        try:
            await wait_for_discovery(cluster)
            one, two = cluster.signals
            results: dict[str, Any] = {"join": [], "stream_add": []}
            tasks = []
            for i in range(peers):
                node = (one, two)[i % 2]
                event = asyncio.Event()
                peer = join_then_wait_stream_add(
                    node.ws_url, f"p{i}-{node.name}", "fanout", event, results
                )
                tasks.append(asyncio.ensure_future(peer))
                await event.wait()
            await asyncio.sleep(SETTLE)  # every join announced everywhere, and read
            teacher = await Client.connect(one.ws_url, "teacher", ice_ips=["127.0.0.1"])
            await teacher.join("fanout")
            began = time.perf_counter()  # the publish call: offer, ICE gathering, answer
            await teacher.publish("fanout", [PatternTrack(160, 120)])
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            await teacher.close()
        finally:
            cluster.stop()
    same = [t - began for uid, t in results["stream_add"] if uid.endswith("signal-1")]
    other = [t - began for uid, t in results["stream_add"] if uid.endswith("signal-2")]
    ms = 1000.0
    return {
        "peers": peers,
        "join_p50_ms": round(percentile(results["join"], 0.5) * ms, 2),
        "join_p99_ms": round(percentile(results["join"], 0.99) * ms, 2),
        "stream_add_same_node_p50_ms": round(percentile(same, 0.5) * ms, 2),
        "stream_add_same_node_p99_ms": round(percentile(same, 0.99) * ms, 2),
        "stream_add_other_node_p50_ms": round(percentile(other, 0.5) * ms, 2),
        "stream_add_other_node_p99_ms": round(percentile(other, 0.99) * ms, 2),
        "cross_node_extra_p50_ms": round((percentile(other, 0.5) - percentile(same, 0.5)) * ms, 2),
    }


async def publish_subscribe_latency(url: str, rounds: int, tag: str) -> tuple[list[float], ...]:
    publishes, subscribes = [], []
    for i in range(rounds):
        a = await Client.connect(url, f"a{tag}{i}", ice_ips=["127.0.0.1"])
        b = await Client.connect(url, f"b{tag}{i}", ice_ips=["127.0.0.1"])
        rid = f"grpc-{tag}-{i}"
        await a.join(rid)
        await b.join(rid)
        began = time.perf_counter()
        publication = await a.publish(rid, [PatternTrack(160, 120)])
        publishes.append(time.perf_counter() - began)
        began = time.perf_counter()
        await b.subscribe(rid, publication.mid, publication.sfuid, ("video",))
        subscribes.append(time.perf_counter() - began)
        await a.close()
        await b.close()
    return publishes, subscribes


async def grpc_overhead(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        embedded = start_server(Path(directory))
        cluster = start_cluster(Path(directory) / "cluster", sfus=1, signals=1)
        try:
            await wait_for_discovery_one(cluster)
            runs: dict[str, list[float]] = {"serve-pub": [], "serve-sub": [],
                                            "cluster-pub": [], "cluster-sub": []}  # fmt: skip
            order = ["serve", "cluster", "cluster", "serve"]  # A B B A
            for n, which in enumerate(order * 2):
                url = embedded.ws_url if which == "serve" else cluster.signals[0].ws_url
                pub, sub = await publish_subscribe_latency(url, rounds, f"{which}{n}")
                runs[f"{which}-pub"].append(statistics.median(pub))
                runs[f"{which}-sub"].append(statistics.median(sub))
        finally:
            stop_server(embedded)
            cluster.stop()
    out: dict[str, Any] = {"rounds_per_run": rounds, "runs": len(order) * 2}
    for key, values in runs.items():
        out[f"{key}_median_ms"] = round(statistics.median(values) * 1000, 2)
        out[f"{key}_spread_ms"] = round((max(values) - min(values)) * 1000, 2)
    out["grpc_publish_overhead_ms"] = round(
        out["cluster-pub_median_ms"] - out["serve-pub_median_ms"], 2
    )
    out["grpc_subscribe_overhead_ms"] = round(
        out["cluster-sub_median_ms"] - out["serve-sub_median_ms"], 2
    )
    return out


async def wait_for_discovery_one(cluster: Any) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.get(f"{cluster.signals[0].http_url}/stats") as r:
                if (await r.json())["signal"]["cluster"]["sfu_nodes"]:
                    return
            await asyncio.sleep(0.1)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "fanout": await fanout(args.peers),
        "grpc": await grpc_overhead(args.rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="publish+subscribe per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
