#!/usr/bin/env bash
# Container engine for the testcontainers harness (tests/integration/kafka_helpers.py):
#   1. podman configured as measured on this kind of machine (runc, cgroupfs, no default
#      ulimits: see the field notes in ARCHITECTURE.md);
#   2. podman's Docker-compatible API on unix:///run/claimflow-podman.sock, started in the
#      background when it does not answer;
#   3. a local Kafka image (no registry needed): a JRE made by the host JDK's jlink, the shared
#      libraries it needs, busybox-static, and the same Kafka jars as the local broker,
#      imported with `tar | podman import`. Skipped when the image exists with the same inputs.
# Idempotent; run by `make setup` (after setup-kafka). Env: CLAIMFLOW_PODMAN_SOCKET,
# CLAIMFLOW_KAFKA_IMAGE, KAFKA_CACHE_DIR (through `claimflow kafka install`).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
SOCKET="${CLAIMFLOW_PODMAN_SOCKET:-/run/claimflow-podman.sock}"
IMAGE="${CLAIMFLOW_KAFKA_IMAGE:-localhost/claimflow/kafka:4.1.1}"
CONF=/etc/containers/containers.conf
MARK="# managed by claimflow scripts/setup-containers.sh"
# Modules the broker, the storage tool and the Kafka command-line tools load (JMX, SASL,
# TLS, compression through Unsafe, ...); everything else of the JDK stays out of the image.
JAVA_MODULES=java.base,java.compiler,java.desktop,java.instrument,java.logging,java.management,\
java.management.rmi,java.naming,java.net.http,java.rmi,java.scripting,java.security.jgss,\
java.security.sasl,java.sql,java.transaction.xa,java.xml,jdk.crypto.ec,jdk.jfr,jdk.management,\
jdk.management.agent,jdk.naming.dns,jdk.net,jdk.security.auth,jdk.security.jgss,jdk.unsupported,\
jdk.zipfs

say() { echo "setup-containers: $*"; }
die() { echo "setup-containers: $*" >&2; exit 1; }

for tool in podman runc jlink busybox; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing; run 'make setup-system' (as root)"
done
if [ "$(id -u)" -ne 0 ]; then
  die "needs root (rootful podman with a socket under /run). Without it, point the integration
  tests at a running broker: CLAIMFLOW_TEST_BOOTSTRAP=host:port, or at a Docker host: DOCKER_HOST"
fi

configure_podman() {
  local wanted
  wanted="$MARK
[containers]
# The default nofile/nproc ulimits cannot be applied inside this kind of sandbox.
default_ulimits = []

[engine]
# crun fails on hybrid cgroup v1/v2 hosts; runc with cgroupfs works.
runtime = \"runc\"
cgroup_manager = \"cgroupfs\""
  if [ ! -e "$CONF" ] || head -1 "$CONF" | grep -qxF "$MARK"; then
    if [ "$(cat "$CONF" 2>/dev/null)" != "$wanted" ]; then
      mkdir -p "$(dirname "$CONF")"
      printf '%s\n' "$wanted" >"$CONF"
      say "wrote $CONF"
    fi
    return
  fi
  # Someone else's file: leave it alone as long as it gives what the harness needs.
  local runtime manager
  runtime="$(podman info --format '{{.Host.OCIRuntime.Name}}')"
  manager="$(podman info --format '{{.Host.CgroupManager}}')"
  [ "$runtime" = runc ] && [ "$manager" = cgroupfs ] || die "$CONF is not ours and gives
  runtime=$runtime cgroup_manager=$manager; set runtime = \"runc\", cgroup_manager = \"cgroupfs\"
  ([engine]) and default_ulimits = [] ([containers]) in it"
}

api_answers() { podman --remote --url "unix://$SOCKET" version >/dev/null 2>&1; }

start_api() {
  if api_answers; then
    say "podman API answers on unix://$SOCKET"
    return
  fi
  rm -f "$SOCKET"
  mkdir -p "$CACHE"
  # setsid + nohup: the service outlives make; --time=0 keeps it from exiting when idle.
  # Started from /: the checkout may be deleted while the service lives on, and conmon then
  # fails every container start ("Failed to get working directory"; runc: "write child:
  # broken pipe"), as happened to a second CI run in a re-cloned folder.
  (cd / && setsid nohup podman system service --time=0 "unix://$SOCKET" \
    >>"$CACHE/podman-service.log" 2>&1 </dev/null &)
  local deadline=$((SECONDS + 30))
  until api_answers; do
    [ "$SECONDS" -lt "$deadline" ] || die "podman API did not answer on $SOCKET within 30 s
  (see $CACHE/podman-service.log)"
    sleep 0.2
  done
  say "started podman API on unix://$SOCKET (log: $CACHE/podman-service.log)"
}

java_home() { dirname "$(dirname "$(readlink -f "$(command -v jlink)")")"; }

inputs_digest() {
  # Everything the image is made of: the build recipe, the JDK, busybox and the jars.
  {
    declare -f build_image bake_class_archive copy_with_libs  # the recipe, not the whole file
    cat "$(java_home)/release"
    echo "$JAVA_MODULES"
    busybox 2>&1 | head -1
    cat "$JARS_ROOT/pom.sha256"
    (cd "$LIBS" && ls -l --time-style=+ -- *.jar | awk '{print $5, $NF}')
  } | sha256sum | cut -c1-32
}

copy_with_libs() {
  # Copy the shared libraries ldd reports for the given ELF files into the root filesystem,
  # at the same paths (the dynamic loader finds them through LD_LIBRARY_PATH).
  local rootfs=$1; shift
  ldd "$@" 2>/dev/null | awk '/^\t/ { for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' \
    | sort -u | while read -r lib; do
      [ -e "$rootfs$lib" ] || cp -L --parents "$lib" "$rootfs"
    done
}

build_image() {
  local rootfs work
  work="$(mktemp -d "$CACHE/image-build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  rootfs="$work/rootfs"
  mkdir -p "$rootfs"/{bin,etc,root,tmp,opt/kafka/config,var/lib/kafka}
  chmod 1777 "$rootfs/tmp"

  # --generate-cds-archive: the JDK's own class-data archive, the base the broker's builds on.
  jlink --add-modules "$JAVA_MODULES" --strip-debug --no-header-files --no-man-pages \
    --compress=2 --generate-cds-archive --output "$rootfs/opt/java" >/dev/null
  # Native code the JVM and the compression codecs (snappy, zstd, lz4 jars) load at runtime.
  "$BIN/python" - "$work/native" "$LIBS"/snappy-java-*.jar "$LIBS"/zstd-jni-*.jar \
    "$LIBS"/lz4-java-*.jar <<'PY'
import sys, zipfile
out, jars = sys.argv[1], sys.argv[2:]
for jar in jars:
    with zipfile.ZipFile(jar) as archive:
        for name in archive.namelist():
            low = name.lower()
            if "linux" in low and ("amd64" in low or "x86_64" in low) and low.endswith(".so"):
                archive.extract(name, out)
PY
  # A headless broker never loads the desktop's native parts (X11, fonts, sound, images);
  # their libraries would double the image.
  mapfile -t elves < <(find "$rootfs/opt/java" "$work/native" -type f \
    \( -name '*.so' -o -path '*/bin/*' \) \
    ! -regex '.*/lib\(awt_xawt\|jawt\|atk-wrapper\|splashscreen\|jsound\|fontmanager\|lcms\|javajpeg\)\.so')
  copy_with_libs "$rootfs" "${elves[@]}"
  # glibc loads name-service modules by name: needed for /etc/hosts and DNS lookups.
  for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2; do
    if [ -e "$lib" ]; then cp -L --parents "$lib" "$rootfs"; fi
  done

  cp "$(command -v busybox)" "$rootfs/bin/busybox"
  for applet in $(busybox --list); do
    if [ ! -e "$rootfs/bin/$applet" ]; then ln -s busybox "$rootfs/bin/$applet"; fi
  done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\n' >"$rootfs/etc/group"
  printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

  mkdir -p "$rootfs/opt/kafka/libs"
  cp "$LIBS"/*.jar "$rootfs/opt/kafka/libs/"
  # Format the KRaft storage once here, so that no container pays for a second JVM start.
  # The harness runs node 1 with the controller on 127.0.0.1:9093, as formatted here.
  printf '%s\n' process.roles=broker,controller node.id=1 \
    controller.quorum.voters=1@127.0.0.1:9093 controller.listener.names=CONTROLLER \
    listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093 \
    "log.dirs=$rootfs/var/lib/kafka/data" >"$work/format.properties"
  java -Xmx256m -cp "$LIBS/*" kafka.tools.StorageTool format -c "$work/format.properties" \
    -t "$("$BIN/python" -c 'import secrets; from broker.config import cluster_id
print(cluster_id(secrets.token_bytes(16)))')" >/dev/null
  # One JVM command line for every Kafka process in the image (java @/opt/kafka/config/jvm.args):
  # the harness's broker and storage tool, and the class-archive run below.
  printf '%s\n' -Xmx512m -Xms512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
    -cp '/opt/kafka/libs/*' >"$rootfs/opt/kafka/config/jvm.args"
  printf '%s\n' process.roles=broker,controller node.id=1 \
    controller.quorum.voters=1@127.0.0.1:9093 controller.listener.names=CONTROLLER \
    listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093 \
    log.dirs=/tmp/archive-run offsets.topic.replication.factor=1 \
    transaction.state.log.replication.factor=1 transaction.state.log.min.isr=1 \
    >"$rootfs/opt/kafka/config/archive-run.properties"
  cat >"$rootfs/opt/kafka/config/log4j2.properties" <<'LOG4J'
# Console logging: `podman logs` shows the broker.
status = warn
name = claimflow-kafka
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
LOG4J

  local old_id
  old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -c . | podman import \
    --change 'ENV PATH=/opt/java/bin:/bin' \
    --change 'ENV JAVA_HOME=/opt/java' \
    --change 'ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu' \
    --change 'WORKDIR /opt/kafka' \
    --change 'EXPOSE 9092' \
    --change "LABEL dev.claimflow.inputs=$DIGEST" \
    --change 'CMD ["/bin/sh"]' \
    --quiet - "$STAGE" >/dev/null
  bake_class_archive
  if [ -n "$old_id" ] && [ "$old_id" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$old_id" >/dev/null 2>&1 || true  # the replaced build, now untagged
  fi
  rm -rf "$work"
  trap - EXIT
}

bake_class_archive() {
  # Run the broker once in the new image and keep the class-data-sharing archive the JVM
  # writes on a graceful exit: loading Kafka's classes is most of a start's CPU time, and
  # every container started from the image then skips half of it. The run also proves that
  # the broker starts in the image before the image gets its tag.
  local cid deadline
  cid="$(podman run -d --tmpfs /tmp/archive-run "$STAGE" sh -c \
    'cp -r /var/lib/kafka/data/. /tmp/archive-run/ && exec java @/opt/kafka/config/jvm.args \
     -Xlog:cds*=off -XX:ArchiveClassesAtExit=/opt/kafka/kafka.jsa \
     kafka.Kafka /opt/kafka/config/archive-run.properties')"
  deadline=$((SECONDS + 300))
  until podman logs "$cid" 2>&1 | grep -q 'Kafka Server started'; do
    if [ "$SECONDS" -ge "$deadline" ] || \
       [ "$(podman inspect --format '{{.State.Running}}' "$cid")" != true ]; then
      podman logs "$cid" 2>&1 | tail -20 >&2
      podman rm -f "$cid" >/dev/null
      podman rmi "$STAGE" >/dev/null 2>&1 || true
      die "the broker did not start in the new image"
    fi
    sleep 0.5
  done
  podman stop -t 120 "$cid" >/dev/null
  podman commit -q --change 'CMD ["/bin/sh"]' "$cid" "$IMAGE" >/dev/null
  podman rm "$cid" >/dev/null
  podman rmi "$STAGE" >/dev/null 2>&1 || true
  podman run --rm "$IMAGE" test -s /opt/kafka/kafka.jsa || die "no class archive in $IMAGE"
}

configure_podman
LIBS="$("$BIN/claimflow" kafka install)"
JARS_ROOT="$(dirname "$LIBS")"
CACHE="$(dirname "$JARS_ROOT")"
start_api
# Several checkouts (or engineers) may run `make setup` at once: one builds, the others wait
# and then find the image up to date.
exec 9>"$CACHE/setup-containers.lock"
flock 9
DIGEST="$(inputs_digest)"
current="$(podman image inspect --format '{{index .Labels "dev.claimflow.inputs"}}' "$IMAGE" \
  2>/dev/null || true)"
if [ "$current" = "$DIGEST" ]; then
  say "image $IMAGE up to date"
else
  started=$SECONDS
  STAGE="localhost/claimflow/kafka-stage:$DIGEST"
  build_image
  say "built $IMAGE in $((SECONDS - started)) s ($(podman image inspect --format '{{.Size}}' \
    "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
fi
# Earlier builds that were still in use by a container when they were replaced: remove the
# ones nothing uses any more (ours only: they carry the inputs label).
for stale in $(podman images --quiet --filter dangling=true --filter label=dev.claimflow.inputs); do
  podman rmi "$stale" >/dev/null 2>&1 || true
done
