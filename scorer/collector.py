"""Keeps Python's cyclic garbage collector off the worker's long-lived state.

The worker holds its partitions' member histories (up to millions of objects) for as long
as it owns them. Left to itself the collector walks every one of them in each full
collection, which comes round again each time the objects surviving since the last one
grow by a quarter: in process, over 100k realistic v2 claims, that was about a third of
the worker's CPU per claim (decode and member step took 56 us per claim that way, 39 with
this policy; docs/member-stage.md has the measurement).

:class:`BatchCollector` runs after each batch: a collection of the two young generations
(what the batch allocated and what survived its last few collections), then
``gc.freeze()``, which moves every survivor out of all later collections. Nothing the worker
keeps forms reference cycles (histories are tuples of tuples, replaced whole and freed by
reference counting), so freezing them keeps nothing alive that would otherwise be freed.
Cyclic garbage of a batch is collected by its young collection, unless a collection within
the batch had already moved it to the oldest generation; that, and a cycle still alive at a
freeze and dropped later (a replaced producer's callbacks, a kept exception), wait for the
full collection of everything, unfrozen first, every ``full_every_s``. A full collection
after each batch instead cost 3.4 us per claim in process, against 0.1 for the young one.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

FULL_COLLECTION_EVERY_S = 600.0


class BatchCollector:
    """Collects the young generations after a batch and freezes the survivors; a full
    collection of everything every ``full_every_s``."""

    def __init__(self, full_every_s: float = FULL_COLLECTION_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every_s = full_every_s
        self.clock = clock
        self.last_full = clock()

    def after_batch(self) -> int:
        """Collect and freeze; returns the number of unreachable objects found."""
        now = self.clock()
        if now - self.last_full >= self.full_every_s:
            gc.unfreeze()
            self.last_full = now
            found = gc.collect()
        else:
            found = gc.collect(1)
        gc.freeze()
        return found
