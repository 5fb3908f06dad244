"""The floor under any forwarder on this machine: what the kernel charges to send one
1200-byte UDP datagram over loopback to one of N sockets read by a process on the other
core, at a given packet rate, with nothing else done per packet (no SRTP, no header).

Any server's CPU per forwarded packet is this plus its own work. On a virtual machine
the wake-ups behind each datagram are costly, so this number says how low "µs per
forwarded packet" can go here at all, whatever the language.
"""

from __future__ import annotations

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
