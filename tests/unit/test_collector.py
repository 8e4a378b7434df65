"""The worker's garbage collection policy (scorer.collector): what a batch leaves behind is
collected and the survivors frozen; a cycle dropped after it was frozen is collected by the
periodic full collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from scorer.collector import BatchCollector
from tests.fake_kafka import FakeModelClient, Harness, three_claims


class Node:
    """An object in a reference cycle (only the cyclic collector frees it)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Leave the test process's collector as it was."""
    yield
    gc.unfreeze()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_batch_cycle_is_collected_and_survivors_are_frozen() -> None:
    collector = BatchCollector(clock=Clock())
    kept, dropped = Node(), Node()
    dead = weakref.ref(dropped)
    del dropped
    frozen_before = gc.get_freeze_count()
    assert collector.after_batch() >= 1
    assert dead() is None
    assert gc.get_freeze_count() > frozen_before
    assert gc.get_count()[0] < 50  # a fresh young generation (only what ran since)
    assert gc.is_tracked(kept)


def test_a_frozen_cycle_dropped_later_waits_for_the_full_collection() -> None:
    clock = Clock()
    collector = BatchCollector(full_every_s=600.0, clock=clock)
    node = Node()
    collector.after_batch()  # node survives the batch: frozen
    dead = weakref.ref(node)
    del node
    clock.now = 599.0
    collector.after_batch()
    assert dead() is not None  # frozen: not walked by a batch's collection
    clock.now = 600.0
    collector.after_batch()
    assert dead() is None


def test_the_loop_runs_it_after_each_batch() -> None:
    runs: list[int] = []
    h = Harness(client=FakeModelClient())
    h.loop.after_batch = lambda: runs.append(1)
    three_claims(h.cluster)
    h.run()
    assert len(h.cluster.decisions()) == 3
    assert h.cluster.commits >= 1
    assert runs == [1] * h.cluster.commits
