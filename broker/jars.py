"""The Kafka runtime: jars resolved by Maven from the committed pom into a cache folder.

The cache lives outside the repository (``KAFKA_CACHE_DIR``, default ``~/.cache/claimflow``)
under ``kafka-<version>/``; a stamp holding the pom's digest makes ``install_jars``
idempotent and re-resolves only when the pom changes.
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
from broker.errors import BrokerError
from broker.settings import KafkaSettings

logger = logging.getLogger(__name__)

MIN_JAVA = 17
ALTERNATIVES = (
    "Alternatives without a local broker: point claimflow at any running Kafka cluster with "
    "KAFKA_BOOTSTRAP_SERVERS=host:port, or run the stack with the compose file "
    "(docker-compose.yml; `docker compose up` or `podman-compose up`). On Debian/Ubuntu, "
    "`make setup` installs Java and Maven."
)
STAMP = "pom.sha256"


def pom_text() -> bytes:
    return (resources.files("broker") / "java" / "pom.xml").read_bytes()


def pom_digest(pom: bytes) -> str:
    return hashlib.sha256(pom).hexdigest()


def cached_libs(settings: KafkaSettings, digest: str) -> Path | None:
    """The jars folder when it was resolved from this very pom, else None."""
    stamp = settings.jars_root / STAMP
    libs = settings.libs_dir
    if stamp.is_file() and stamp.read_text().strip() == digest and any(libs.glob("*.jar")):
        return libs
    return None


def find_java(settings: KafkaSettings) -> str:
    """Path of a Java 17+ executable, or a BrokerError naming the alternatives."""
    java = shutil.which(settings.java)
    if java is None:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker, but {settings.java!r} "
            f"was not found (set KAFKA_JAVA to its path). {ALTERNATIVES}"
        )
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    major = java_major_version(probe.stderr + probe.stdout)
    if major is None or major < MIN_JAVA:
        raise BrokerError(
            f"Java {MIN_JAVA}+ is needed to run the local Kafka broker; {java} reports "
            f"{(probe.stderr or probe.stdout).strip().splitlines()[:1]}. {ALTERNATIVES}"
        )
    return java


def find_mvn(settings: KafkaSettings) -> str:
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise BrokerError(
            f"Maven is needed once to fetch the Kafka {settings.jars_root.name} jars into "
            f"{settings.jars_root}, but {settings.mvn!r} was not found (set KAFKA_MVN). "
            f"{ALTERNATIVES}"
        )
    return mvn


def install_jars(settings: KafkaSettings) -> Path:
    """Resolve the Kafka jars into the cache unless already there; return the jars folder."""
    pom = pom_text()
    digest = pom_digest(pom)
    libs = cached_libs(settings, digest)
    if libs is not None:
        return libs
    settings.jars_root.mkdir(parents=True, exist_ok=True)
    with _install_lock(settings.jars_root):
        # Another process may have finished the same install while we waited for the lock.
        libs = cached_libs(settings, digest)
        if libs is not None:
            return libs
        return _resolve(settings, pom, digest)


@contextmanager
def _install_lock(root: Path) -> Iterator[None]:
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _resolve(settings: KafkaSettings, pom: bytes, digest: str) -> Path:
    find_java(settings)  # Maven needs it too; fail with the friendlier message first.
    mvn = find_mvn(settings)
    root = settings.jars_root
    pom_path = root / "pom.xml"
    pom_path.write_bytes(pom)
    staging = root / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("resolving the Kafka runtime with Maven into %s (first time: about a minute)",
                root)
    started = time.monotonic()
    result = subprocess.run(
        [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom_path),
         "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
         "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False, cwd=root,
    )
    if result.returncode != 0 or not any(staging.glob("*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BrokerError(f"Maven could not resolve the Kafka jars (exit {result.returncode}):\n"
                          f"{tail}\n{ALTERNATIVES}")
    shutil.rmtree(settings.libs_dir, ignore_errors=True)
    staging.rename(settings.libs_dir)
    (root / STAMP).write_text(digest + "\n")
    logger.info("resolved %d jars in %.1f s", len(list(settings.libs_dir.glob("*.jar"))),
                time.monotonic() - started)
    return settings.libs_dir
