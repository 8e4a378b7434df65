"""Synthea's runtime: jars resolved by Maven from the committed pom into a cache folder.

The same scheme as the Kafka jars (``broker/jars.py``): the cache lives outside the repository
(``SYNTHEA_CACHE_DIR``, default ``~/.cache/claimflow``) under ``synthea-<version>/``; a stamp
holding the pom's digest makes :func:`install_jars` idempotent, and a file lock keeps parallel
installs from racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from broker.config import java_major_version
from producer.synthea_settings import SyntheaSettings

logger = logging.getLogger(__name__)

MIN_JAVA = 11  # Synthea 3.3.0's classes are Java 11 bytecode (class file version 55)
STAMP = "pom.sha256"
HINT = "On Debian/Ubuntu, `make setup` installs Java and Maven and then fetches Synthea."


class SyntheaError(Exception):
    """A clear, actionable failure of the Synthea profile (missing tool, failed run, ...)."""


def pom_text() -> bytes:
    return (resources.files("producer") / "java" / "synthea-pom.xml").read_bytes()


def cached_libs(settings: SyntheaSettings, digest: str) -> Path | None:
    """The jars folder when it was resolved from this very pom, else None."""
    stamp = settings.jars_root / STAMP
    libs = settings.libs_dir
    if stamp.is_file() and stamp.read_text().strip() == digest and any(libs.glob("*.jar")):
        return libs
    return None


def find_java(settings: SyntheaSettings) -> str:
    """Path of a Java 11+ executable, or a SyntheaError saying how to get one."""
    java = shutil.which(settings.java)
    if java is None:
        raise SyntheaError(f"Java {MIN_JAVA}+ is needed to run Synthea, but {settings.java!r} "
                           f"was not found (set SYNTHEA_JAVA to its path). {HINT}")
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        first = (probe.stderr or probe.stdout).strip().splitlines()[:1]
        raise SyntheaError(f"Java {MIN_JAVA}+ is needed to run Synthea; {java} reports {first}. "
                           f"{HINT}")
    return java


def install_jars(settings: SyntheaSettings) -> Path:
    """Resolve Synthea's jars into the cache unless already there; return the jars folder."""
    pom = pom_text()
    digest = hashlib.sha256(pom).hexdigest()
    libs = cached_libs(settings, digest)
    if libs is not None:
        return libs
    settings.jars_root.mkdir(parents=True, exist_ok=True)
    with file_lock(settings.jars_root / ".lock"):
        # Another process may have finished the same install while we waited for the lock.
        libs = cached_libs(settings, digest)
        if libs is not None:
            return libs
        return _resolve(settings, pom, digest)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes, released when the block ends (or the process dies)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _resolve(settings: SyntheaSettings, pom: bytes, digest: str) -> Path:
    find_java(settings)  # Maven needs it too; fail with the friendlier message first.
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise SyntheaError(f"Maven is needed once to fetch Synthea's jars into "
                           f"{settings.jars_root}, but {settings.mvn!r} was not found "
                           f"(set SYNTHEA_MVN). {HINT}")
    root = settings.jars_root
    pom_path = root / "pom.xml"
    pom_path.write_bytes(pom)
    staging = root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("resolving Synthea with Maven into %s (first time: ~300 MB, a minute or two)",
                root)
    started = time.monotonic()
    result = subprocess.run(
        [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom_path),
         "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
         "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False, cwd=root,
    )
    if result.returncode != 0 or not any(staging.glob("synthea-*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise SyntheaError(f"Maven could not resolve Synthea's jars (exit {result.returncode}):"
                           f"\n{tail}\n{HINT}")
    shutil.rmtree(settings.libs_dir, ignore_errors=True)
    staging.rename(settings.libs_dir)
    (root / STAMP).write_text(digest + "\n")
    logger.info("resolved %d jars in %.1f s", len(list(settings.libs_dir.glob("*.jar"))),
                time.monotonic() - started)
    return settings.libs_dir
