"""The cyclic garbage collector, set for a server whose heap is mostly long-lived.

CPython's collector stops the event loop while it scans: a full collection walks every
container object of the process, so its pause grows with the heap, and every forwarded
packet waits for it. A lecture's heap is large and grows fast: a signaling connection
holds ~200 container objects, a subscriber's peer connection ~700, and the modules,
classes and tables built at startup another ~70,000 that never become garbage. Measured
during a 5,000-member join storm with the interpreter's defaults, collections took 4.2 s
of the server's 10.8 s of CPU, one full collection 0.6 s; during a 300-subscriber storm
single full collections stopped forwarding for 180-380 ms.

Two settings, both plain `gc` calls:

- `gc.freeze()` once the server is built: what startup made moves to a generation the
  collector never scans (it would never be freed anyway), so no pause includes it.
- Full collections made rare: one only after `FULL` middle-aged collections instead of
  10 (CPython also waits until the objects promoted since the last full collection are a
  quarter of those it kept), so a storm of arrivals no longer sets off one full scan of
  the growing heap after another. The young generations stay small (`YOUNG` x `MIDDLE`
  objects at most in a middle-aged collection, a few milliseconds), since their pauses
  stop forwarding too; a live object is scanned about once in them whatever their
  size. The price: cyclic garbage that reached the old generation (a closed peer
  connection's) waits longer to be freed, at most about YOUNG x MIDDLE x FULL objects.
"""

from __future__ import annotations

import gc

from aiosfu.log import get_logger

log = get_logger("aiosfu.heap")

YOUNG = 2_000  # new container objects between young collections (CPython: 700)
MIDDLE = 10  # young collections per middle-aged one (CPython: 10)
FULL = 25  # middle-aged collections at least between full ones (CPython: 10)


def settle() -> None:
    """Call once the server is built, before it serves: freeze what startup made."""
    gc.collect()  # what startup left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, FULL)
    log.debug("heap-settled", frozen=gc.get_freeze_count(), thresholds=gc.get_threshold())
