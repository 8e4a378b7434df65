"""The Kafka runtime: jars resolved by Maven from the committed pom into a cache folder.

The cache lives outside the repository (``KAFKA_CACHE_DIR``, default ``~/.cache/claimflow``)
under ``kafka-<version>/``; :mod:`claimflow.maven` keeps it idempotent (a stamp of the pom's
digest) and safe against parallel installs (a file lock).
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from broker.errors import BrokerError
from broker.settings import KafkaSettings
from claimflow import maven
from claimflow.maven import STAMP, java_major_version, pom_digest

MIN_JAVA = 17
ALTERNATIVES = (
    "Alternatives without a local broker: point claimflow at any running Kafka cluster with "
    "KAFKA_BOOTSTRAP_SERVERS=host:port, or run the stack with the compose file "
    "(docker-compose.yml; `docker compose up` or `podman-compose up`). On Debian/Ubuntu, "
    "`make setup` installs Java and Maven."
)
__all__ = ["STAMP", "cached_libs", "find_java", "find_mvn", "install_jars", "pom_digest",
           "pom_text"]


def pom_text() -> bytes:
    return (resources.files("broker") / "java" / "pom.xml").read_bytes()


def jar_set(settings: KafkaSettings) -> maven.JarSet:
    return maven.JarSet(what="the Kafka runtime", pom=pom_text(), root=settings.jars_root,
                        libs=settings.libs_dir)


def cached_libs(settings: KafkaSettings) -> Path | None:
    """The jars folder when it was resolved from the committed pom, else None."""
    return maven.cached_libs(jar_set(settings))


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
    return maven.find_mvn(jar_set(settings), settings.mvn, "KAFKA_MVN",
                          lambda message: BrokerError(f"{message}. {ALTERNATIVES}"))


def broker_error(message: str) -> BrokerError:
    """A failed Maven run: its output, then what to do."""
    return BrokerError(f"{message}\n{ALTERNATIVES}")


def install_jars(settings: KafkaSettings) -> Path:
    """Resolve the Kafka jars into the cache unless already there; return the jars folder."""
    jars = jar_set(settings)
    if maven.cached_libs(jars) is None:
        find_java(settings)  # Maven needs it too; fail with the friendlier message first.
    return maven.install_jars(jars, find_mvn=lambda: find_mvn(settings),
                              failure=broker_error)
