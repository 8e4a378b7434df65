#!/usr/bin/env bash
# Build the claimflow runtime image WITHOUT a registry, for podman on machines that cannot
# pull `python:3.11-slim` (the Dockerfile's base). The image is this checkout's own Python
# environment: the interpreter .venv was made from, .venv itself (dependencies and the
# editable install of the project), the shared libraries `ldd` reports for all of them and
# busybox-static for /bin/sh, imported with `tar | podman import`. Paths inside the image are
# the host's, so the virtualenv works unchanged. The project's packages are NOT copied: the
# editable install points at this checkout, which containers bind-mount read-only (see
# tests/integration/test_compose_podman.py), so the image changes only with the lock file.
#
# On a Docker host with registry access use the Dockerfile (`docker compose build`) instead.
#
# Usage: deploy/build-local-image.sh [IMAGE]   (default localhost/claimflow:local, the name
# docker-compose.yml uses). Skipped when the image exists with the same inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
IMAGE="${1:-localhost/claimflow:local}"
VENV="$ROOT/.venv"

say() { echo "build-local-image: $*"; }
die() { echo "build-local-image: $*" >&2; exit 1; }

for tool in podman busybox ldd tar sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing"
done
[ -x "$VENV/bin/python" ] || die "no $VENV; run 'make setup-python' first"
PYHOME="$(sed -n 's/^home = //p' "$VENV/pyvenv.cfg")"
PYPREFIX="$(dirname "$PYHOME")"
[ -x "$PYHOME/python3" ] || die "the interpreter of .venv ($PYHOME) is missing"

# Inputs: the lock and the project metadata (what .venv holds), the interpreter, the path.
inputs="$( { sha256sum requirements.lock pyproject.toml; echo "$PYPREFIX $ROOT"; } \
  | sha256sum | cut -c1-16)"
if [ "$(podman image inspect --format '{{index .Labels "claimflow.inputs"}}' "$IMAGE" \
        2>/dev/null || true)" = "$inputs" ]; then
  say "$IMAGE is up to date ($inputs)"
  exit 0
fi

previous="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE" "$STAGE.elves"' EXIT
began=$SECONDS
say "staging into $STAGE"
copy_tree() {  # copy_tree SRC: same absolute path inside the stage, without caches and tests
  mkdir -p "$STAGE$(dirname "$1")"
  tar -C "$(dirname "$1")" -cf - --exclude='__pycache__' --exclude='*.pyc' \
      --exclude='lib/python3.*/test' --exclude='lib/python3.*/idlelib' \
      --exclude='lib/python3.*/tkinter' --exclude='lib/python3.*/ensurepip' \
      --exclude='*.a' "$(basename "$1")" | tar -C "$STAGE$(dirname "$1")" -xf -
}
copy_tree "$PYPREFIX"
copy_tree "$VENV"

# Shared libraries of every ELF file staged (the wheels bundle most of theirs). ldd fails on
# static and foreign files; those have nothing to add.
elves="$STAGE.elves"
find "$STAGE" -type f \( -name '*.so*' -o -perm -u+x \) -print0 \
  | xargs -0 file -N 2>/dev/null | grep -E ': +ELF' | cut -d: -f1 >"$elves" || true
libs="$( (xargs -r -a "$elves" -d '\n' ldd 2>/dev/null || true) \
  | awk '/=> \//{print $3}' | sort -u)"
rm -f "$elves"
for lib in $libs; do
  case "$lib" in "$STAGE"*) continue ;; esac
  [ -e "$STAGE$lib" ] || { mkdir -p "$STAGE$(dirname "$lib")"; cp -L "$lib" "$STAGE$lib"; }
done
say "$(echo "$libs" | grep -vc "^$STAGE" || true) shared libraries from the host"
mkdir -p "$STAGE/lib64" "$STAGE/bin" "$STAGE/etc" "$STAGE/tmp" "$STAGE/data"
cp -L /lib64/ld-linux-x86-64.so.2 "$STAGE/lib64/"
cp "$(command -v busybox)" "$STAGE/bin/busybox"
for applet in sh date sleep cat ls env nc wget mkdir rm true false; do
  ln -sf busybox "$STAGE/bin/$applet"
done
chmod 1777 "$STAGE/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\n' >"$STAGE/etc/group"
printf 'hosts: files dns\n' >"$STAGE/etc/nsswitch.conf"

say "importing $(du -sh "$STAGE" | cut -f1) as $IMAGE"
tar -C "$STAGE" -cf - . | podman import \
  --change "ENV PATH=$VENV/bin:/bin" \
  --change "ENV CLAIMFLOW_HOME=/data" \
  --change "ENV PYTHONUNBUFFERED=1" \
  --change "ENV PYTHONDONTWRITEBYTECODE=1" \
  --change "ENV MLFLOW_DISABLE_TELEMETRY=true" \
  --change "ENV DO_NOT_TRACK=true" \
  --change "ENV BENTOML_DO_NOT_TRACK=true" \
  --change "ENV TQDM_DISABLE=1" \
  --change "WORKDIR /data" \
  --change 'ENTRYPOINT ["claimflow"]' \
  --change 'CMD ["--help"]' \
  --change "LABEL claimflow.inputs=$inputs" \
  - "$IMAGE" >/dev/null
# The image this one replaces is now untagged; remove it unless a container still uses it.
[ -z "$previous" ] || podman rmi "$previous" >/dev/null 2>&1 || true
say "built $IMAGE in $((SECONDS - began)) s"
