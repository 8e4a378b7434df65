"""Reading the broker's log file: the last lines, and following it as it grows or rotates."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 64 * 1024


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a file, reading only as much of its end as needed."""
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(CHUNK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return data.decode(errors="replace").splitlines()[-count:]


def follow(
    path: Path,
    *,
    poll_s: float = 0.25,
    stop: Callable[[], bool] = lambda: False,
) -> Iterator[str]:
    """Lines appended to ``path`` after this call; reopens the file after log4j rotates it."""
    # Measured now, not when iteration starts, so nothing written in between is skipped.
    start = path.stat().st_size if path.exists() else 0
    return _follow(path, start, poll_s, stop)


def _follow(path: Path, start: int, poll_s: float, stop: Callable[[], bool]) -> Iterator[str]:
    handle = None
    inode = None
    try:
        while not stop():
            if handle is None and path.exists():
                handle = path.open("r", errors="replace")
                handle.seek(start if inode is None else 0)
                inode = os.fstat(handle.fileno()).st_ino
            line = handle.readline() if handle is not None else ""
            if line:
                yield line.rstrip("\n")
                continue
            if handle is not None and _rotated(path, inode):
                handle.close()
                handle = None
                continue
            time.sleep(poll_s)
    finally:
        if handle is not None:
            handle.close()


def _rotated(path: Path, inode: int | None) -> bool:
    try:
        return path.stat().st_ino != inode
    except FileNotFoundError:
        return False
