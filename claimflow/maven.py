"""Jars resolved by Maven from a committed pom into a cache folder outside the repository.

Used for the Kafka runtime (``broker/jars.py``) and Synthea (``producer/synthea_install.py``):
a stamp holding the pom's digest makes :func:`install_jars` idempotent (it resolves again
only when the pom changes), and a file lock keeps parallel installs from racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STAMP = "pom.sha256"


@dataclass(frozen=True)
class JarSet:
    """One set of jars: the pom it comes from and where it is cached."""

    what: str  # for messages: "the Kafka runtime", "Synthea"
    pom: bytes
    root: Path  # <cache>/<name>-<version>: the pom, the stamp, the lock
    libs: Path  # the resolved jars
    expect: str = "*.jar"  # a resolution without a matching jar failed

    @property
    def digest(self) -> str:
        return pom_digest(self.pom)


def pom_digest(pom: bytes) -> str:
    return hashlib.sha256(pom).hexdigest()


def cached_libs(jars: JarSet) -> Path | None:
    """The jars folder when it was resolved from this very pom, else None."""
    stamp = jars.root / STAMP
    if (stamp.is_file() and stamp.read_text().strip() == jars.digest
            and any(jars.libs.glob("*.jar"))):
        return jars.libs
    return None


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes, released when the block ends (or the process dies)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_mvn(jars: JarSet, mvn: str, setting: str,
             failure: Callable[[str], Exception]) -> str:
    """Path of the Maven executable ``mvn`` (a name on PATH or a path), or the caller's error
    naming the setting that points at it."""
    found = shutil.which(mvn)
    if found is None:
        raise failure(f"Maven is needed once to fetch the jars of {jars.what} into {jars.root}, "
                      f"but {mvn!r} was not found (set {setting})")
    return found


def install_jars(jars: JarSet, *, find_mvn: Callable[[], str],
                 failure: Callable[[str], Exception]) -> Path:
    """Resolve ``jars`` into their cache unless already there; return the jars folder.
    ``find_mvn`` returns Maven's path or raises the caller's own error; ``failure`` makes the
    caller's error from a message when Maven fails."""
    libs = cached_libs(jars)
    if libs is not None:
        return libs
    jars.root.mkdir(parents=True, exist_ok=True)
    with file_lock(jars.root / ".lock"):
        # Another process may have finished the same install while we waited for the lock.
        libs = cached_libs(jars)
        if libs is not None:
            return libs
        return _resolve(jars, find_mvn(), failure)


def _resolve(jars: JarSet, mvn: str, failure: Callable[[str], Exception]) -> Path:
    pom_path = jars.root / "pom.xml"
    pom_path.write_bytes(jars.pom)
    staging = jars.root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("resolving %s with Maven into %s (first time: a minute or two)", jars.what,
                jars.root)
    started = time.monotonic()
    result = subprocess.run(
        [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom_path),
         "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
         "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False, cwd=jars.root,
    )
    if result.returncode != 0 or not any(staging.glob(jars.expect)):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise failure(f"Maven could not resolve the jars of {jars.what} "
                      f"(exit {result.returncode}):\n{tail}")
    shutil.rmtree(jars.libs, ignore_errors=True)
    staging.rename(jars.libs)
    (jars.root / STAMP).write_text(jars.digest + "\n")
    logger.info("resolved %d jars in %.1f s", len(list(jars.libs.glob("*.jar"))),
                time.monotonic() - started)
    return jars.libs


_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def java_major_version(version_output: str) -> int | None:
    """Major version from ``java -version`` output ("1.8.0_x" is 8, "17.0.15" is 17)."""
    match = _JAVA_VERSION.search(version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        return int(match.group(2))
    return major
