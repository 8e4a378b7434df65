"""Per-claim_id locks across threads and processes (the gateway's worker processes share
one lock file): mutual exclusion, and no deadlock between overlapping batches."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from gateway.locks import KeyLocks

ROUNDS = 150


def bump_under_lock(lock_path: Path, counter: Path, keys: list[str], threads: int) -> None:
    """Read-modify-write a counter file under the lock of ``keys``, from several threads:
    without exclusion across processes, increments are lost."""
    locks = KeyLocks(stripes=8, lock_path=lock_path)

    def work() -> None:
        for _ in range(ROUNDS):
            with locks.hold(keys):
                value = int(counter.read_text() or "0")
                counter.write_text(str(value + 1))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    locks.close()


def run_processes(tmp_path: Path, key_sets: list[list[str]], threads: int) -> int:
    counter = tmp_path / "counter"
    counter.write_text("0")
    context = multiprocessing.get_context("spawn")  # no lock state inherited by a fork
    processes = [
        context.Process(target=bump_under_lock,
                        args=(tmp_path / "claims.lock", counter, keys, threads))
        for keys in key_sets
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0, "a worker process failed or hung"
    return int(counter.read_text())


def test_one_key_is_exclusive_across_processes_and_threads(tmp_path: Path) -> None:
    assert run_processes(tmp_path, [["claim-1"], ["claim-1"], ["claim-1"]], threads=3) \
        == 3 * 3 * ROUNDS


def test_overlapping_batches_in_opposite_order_do_not_deadlock(tmp_path: Path) -> None:
    locks = KeyLocks(stripes=8)
    keys = [f"k{i}" for i in range(40)]
    spread = {locks.index(key) for key in keys}
    assert len(spread) > 4  # the batches really span several stripes
    # Each batch covers every stripe, so the counter (guarded by all of them) stays exact.
    total = run_processes(tmp_path, [keys, list(reversed(keys)), keys[::2] + keys[1::2]],
                          threads=2)
    assert total == 3 * 2 * ROUNDS


def test_without_a_file_only_threads_are_excluded(tmp_path: Path) -> None:
    locks = KeyLocks(stripes=4)
    inside = []
    guard = threading.Lock()
    overlaps = []

    def work() -> None:
        for _ in range(200):
            with locks.hold(["same"]):
                with guard:
                    inside.append(1)
                    overlaps.append(len(inside))
                with guard:
                    inside.pop()

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert max(overlaps) == 1
    locks.close()  # nothing to close: no file
