"""The floor under any forwarder on this machine: what the kernel charges to send one
1200-byte UDP datagram over loopback to one of N sockets read by a process on the other
core, at a given packet rate, with nothing else done per packet (no SRTP, no header).

Any server's CPU per forwarded packet is this plus its own work. It moves with the
machine (5 to 14 µs on the same virtual machine within minutes), so `python -m bench`
measures it next to every pair of runs, in its own process (`python -m bench.floor`: it
forks, which a process with threads should not), to show the machine's state beside
each figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import time


def _drain(sockets: list[socket.socket], seconds: float, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    selector = selectors.DefaultSelector()
    for sock in sockets:
        selector.register(sock, selectors.EVENT_READ)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in selector.select(0.2):
            try:
                while True:
                    key.fileobj.recv(2048)  # type: ignore[union-attr]
            except BlockingIOError:
                pass


def sendto_floor(
    sockets: int = 20,
    rate: int = 3400,
    seconds: float = 2.0,
    sender_cpus: set[int] | None = None,
    reader_cpus: set[int] | None = None,
) -> float:
    """CPU µs per datagram of a bare `sendto` loop, paced to `rate` datagrams/s in bursts
    of one datagram per socket (a fan-out)."""
    readers = []
    for _ in range(sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        readers.append(sock)
    addresses = [s.getsockname() for s in readers]
    child = os.fork()
    if child == 0:
        try:
            _drain(readers, seconds + 1.0, reader_cpus)
        finally:
            os._exit(0)
    previous = os.sched_getaffinity(0)
    try:
        if sender_cpus:
            os.sched_setaffinity(0, sender_cpus)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        data = os.urandom(1200)
        bursts_per_second = max(1, rate // sockets)
        time.sleep(0.2)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.monotonic()
        sent = 0
        burst = 0
        while time.monotonic() - start < seconds:
            for address in addresses:
                sender.sendto(data, address)
            sent += sockets
            burst += 1
            delay = start + burst / bursts_per_second - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        after = resource.getrusage(resource.RUSAGE_SELF)
        sender.close()
    finally:
        os.sched_setaffinity(0, previous)
        os.waitpid(child, 0)
        for sock in readers:
            sock.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu * 1e6 / sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sender-cpu", type=int, help="core of the sending loop")
    parser.add_argument("--reader-cpu", type=int, help="core of the reading process")
    args = parser.parse_args(argv)
    floor = sendto_floor(
        seconds=args.seconds,
        sender_cpus=None if args.sender_cpu is None else {args.sender_cpu},
        reader_cpus=None if args.reader_cpu is None else {args.reader_cpu},
    )
    print(f"{floor:.3f}")


if __name__ == "__main__":
    main()
