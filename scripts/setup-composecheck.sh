#!/usr/bin/env bash
# Build deploy/composecheck (compose-go's loader: schema validation + model resolution, see
# its main.go) with the machine's Go, and copy the Compose Specification JSON Schema that
# ships with the pinned compose-go module next to it, for tests/unit/test_compose.py:
#   $CLAIMFLOW_COMPOSECHECK_DIR/composecheck       (default ~/.cache/claimflow/composecheck)
#   $CLAIMFLOW_COMPOSECHECK_DIR/compose-spec.json
# The module comes from the Go module proxy at setup time (`go build` verifies it against
# the committed go.sum); nothing of it is committed here. Idempotent: rebuilt only when
# go.mod, go.sum, main.go or the Go version change. Run by `make setup-composecheck`.
set -euo pipefail
cd "$(dirname "$0")/../deploy/composecheck"
OUT="${CLAIMFLOW_COMPOSECHECK_DIR:-$HOME/.cache/claimflow/composecheck}"
MODULE=github.com/compose-spec/compose-go/v2

say() { echo "setup-composecheck: $*"; }
die() { echo "setup-composecheck: $*" >&2; exit 1; }

# Go 1.24+ (compose-go's own minimum). Debian 12's golang-go is 1.19, too old, which is why
# scripts/setup-system.sh does not install it; machines of this kind come with Go installed.
command -v go >/dev/null 2>&1 || die "Go is missing: install Go 1.24 or newer (go.dev/dl; the
  Debian 12 package golang-go is 1.19, too old) and put it on PATH, then run it again"
minor="$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
[ "${minor:-0}" -ge 24 ] || die "$(go env GOVERSION) is too old: compose-go needs Go 1.24+"

mkdir -p "$OUT"
# Parallel `make setup` runs: one builds, the others wait and find it current.
exec 9>"$OUT/.lock"
flock 9
stamp="$( { sha256sum go.mod go.sum main.go; go version; } | sha256sum | cut -c1-32)"
if [ -x "$OUT/composecheck" ] && [ -s "$OUT/compose-spec.json" ] \
   && [ "$(cat "$OUT/stamp" 2>/dev/null)" = "$stamp" ]; then
  say "$OUT/composecheck is up to date"
  exit 0
fi
began=$SECONDS
# -mod=readonly: go.mod/go.sum are the pins; a build that would change them fails instead.
go build -mod=readonly -trimpath -o "$OUT/composecheck.new" .
mv -f "$OUT/composecheck.new" "$OUT/composecheck"
dir="$(go list -mod=readonly -m -f '{{.Dir}}' "$MODULE")"
[ -s "$dir/schema/compose-spec.json" ] || die "no schema/compose-spec.json in $dir"
cp "$dir/schema/compose-spec.json" "$OUT/compose-spec.json.new"
mv -f "$OUT/compose-spec.json.new" "$OUT/compose-spec.json"
chmod 0644 "$OUT/compose-spec.json"  # the module cache is read-only
echo "$stamp" >"$OUT/stamp"
say "built $OUT/composecheck ($(go list -mod=readonly -m -f '{{.Path}} {{.Version}}' \
  "$MODULE")) in $((SECONDS - began)) s"
