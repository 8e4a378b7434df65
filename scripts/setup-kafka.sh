#!/usr/bin/env bash
# Kafka 4.1.1 jars (broker + tools) from the committed pom (broker/java/pom.xml) into the
# cache folder outside the repository (KAFKA_CACHE_DIR, default ~/.cache/claimflow).
# Idempotent: a digest of the pom is stamped next to the jars; an unchanged pom is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
libs="$("$BIN/claimflow" kafka install)"
echo "setup-kafka: Kafka jars in $libs ($(ls "$libs" | wc -l) files)"
