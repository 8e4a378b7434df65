#!/usr/bin/env bash
# Synthea 3.3.0 jars (org.mitre.synthea:synthea and ~140 runtime dependencies, ~200 MB) from
# the committed pom (producer/java/synthea-pom.xml) into the cache folder outside the
# repository (SYNTHEA_CACHE_DIR, default ~/.cache/claimflow). Idempotent: a digest of the pom
# is stamped next to the jars; an unchanged pom is a no-op. A lock serialises parallel runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
libs="$("$BIN/claimflow" synthea install)"
echo "setup-synthea: Synthea jars in $libs ($(ls "$libs" | wc -l) files)"
