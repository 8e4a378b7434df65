"""Per-claim_id mutual exclusion, across the threads of a process and across processes.

The gateway runs as several granian worker processes (``GATEWAY_WORKERS``) that share
``CLAIMFLOW_HOME/gateway``. Two submissions of one claim_id, whichever workers receive them,
must not both score and publish it. A key hashes to one of a fixed number of stripes; a stripe
is a ``threading.Lock`` (the threads of this process) plus, with a lock file, an exclusive
byte-range lock on byte ``stripe`` of that file (the other processes).

Linux open-file-description (OFD) locks are used rather than classic POSIX record locks:
those belong to the whole process, so the kernel's deadlock detector can report a false
EDEADLK when two processes each have several threads waiting, and closing *any* descriptor
of the file drops them all. OFD locks belong to the descriptor opened here. Within a process
the thread lock is taken first, so at most one thread ever holds or waits for a given byte.
Stripes are always taken in ascending order, in threads and in processes alike, so batches
that share stripes cannot wait for each other in a cycle.

There are 65,536 stripes. With 256, a 500-claim batch held ~220 of them (87 %) while it
published, so nearly every other submission, in every worker, waited for it. Now a batch
holds under 1 % of the stripes. Thread locks are created on first use (a byte-range lock
costs nothing until taken; the file stays empty).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Final

# Linux's struct flock on 64-bit platforms: l_type, l_whence, l_start, l_len, l_pid (which
# must be 0 for OFD locks), padded to 32 bytes.
_FLOCK: Final = struct.Struct("hhqqi4x")


class KeyLocks:
    """A fixed set of locks; a key always maps to the same one."""

    def __init__(self, stripes: int = 65_536, lock_path: Path | None = None) -> None:
        self.stripes = stripes
        self._locks: dict[int, threading.Lock] = {}
        self._creating = threading.Lock()
        self._fd: int | None = None
        if lock_path is not None:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def index(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.stripes

    @contextmanager
    def hold(self, keys: Sequence[str]) -> Iterator[None]:
        with ExitStack() as stack:
            for index in sorted({self.index(key) for key in keys}):
                stack.enter_context(self._thread_lock(index))
                if self._fd is not None:
                    stack.enter_context(self._file_range(self._fd, index))
            yield

    def _thread_lock(self, index: int) -> threading.Lock:
        lock = self._locks.get(index)
        if lock is None:
            with self._creating:
                lock = self._locks.setdefault(index, threading.Lock())
        return lock

    @staticmethod
    @contextmanager
    def _file_range(fd: int, index: int) -> Iterator[None]:
        # F_OFD_SETLKW blocks until the byte is free; the GIL is released meanwhile.
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, index, 1, 0))
        try:
            yield
        finally:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, index, 1, 0))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
