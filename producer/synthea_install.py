"""Synthea's runtime: jars resolved by Maven from the committed pom into a cache folder.

The same scheme as the Kafka jars (:mod:`claimflow.maven`): the cache lives outside the
repository (``SYNTHEA_CACHE_DIR``, default ``~/.cache/claimflow``) under ``synthea-<version>/``,
idempotent (a stamp of the pom's digest) and safe against parallel installs (a file lock).
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from claimflow import maven
from claimflow.maven import file_lock, java_major_version
from producer.synthea_settings import SyntheaSettings

MIN_JAVA = 11  # Synthea 3.3.0's classes are Java 11 bytecode (class file version 55)
HINT = "On Debian/Ubuntu, `make setup` installs Java and Maven and then fetches Synthea."
__all__ = ["SyntheaError", "file_lock", "find_java", "install_jars"]


class SyntheaError(Exception):
    """A clear, actionable failure of the Synthea profile (missing tool, failed run, ...)."""


def pom_text() -> bytes:
    return (resources.files("producer") / "java" / "synthea-pom.xml").read_bytes()


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


def jar_set(settings: SyntheaSettings) -> maven.JarSet:
    return maven.JarSet(what="Synthea", pom=pom_text(), root=settings.jars_root,
                        libs=settings.libs_dir, expect="synthea-*.jar")


def find_mvn(settings: SyntheaSettings) -> str:
    return maven.find_mvn(jar_set(settings), settings.mvn, "SYNTHEA_MVN",
                          lambda message: SyntheaError(f"{message}. {HINT}"))


def synthea_error(message: str) -> SyntheaError:
    """A failed Maven run: its output, then what to do."""
    return SyntheaError(f"{message}\n{HINT}")


def install_jars(settings: SyntheaSettings) -> Path:
    """Resolve Synthea's jars into the cache unless already there; return the jars folder."""
    jars = jar_set(settings)
    if maven.cached_libs(jars) is None:
        find_java(settings)  # Maven needs it too; fail with the friendlier message first.
    return maven.install_jars(jars, find_mvn=lambda: find_mvn(settings),
                              failure=synthea_error)
