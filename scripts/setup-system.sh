#!/usr/bin/env bash
# System packages claimflow needs, installed from Debian's archive only when missing.
# Every binary the setup, the demo and the tests rely on is checked by itself (not only the
# first binary of its package): podman installed without its recommends lacks catatonit
# (compose's `init: true`) and, with CNI networking, the dnsname plugin that lets containers
# reach each other by name.
set -euo pipefail

# binary (a name on PATH or an absolute path) -> Debian package that ships it
REQUIRED=(
  "java openjdk-17-jdk-headless"
  "jlink openjdk-17-jdk-headless"
  "mvn maven"
  "podman podman"
  "conmon conmon"
  "runc runc"
  "/usr/libexec/podman/catatonit catatonit"
  "/usr/lib/cni/bridge containernetworking-plugins"
  "/usr/lib/cni/dnsname golang-github-containernetworking-plugin-dnsname"
  "iptables iptables"
  "busybox busybox-static"
  "kcat kcat"
  "chromium chromium"
  "chromedriver chromium-driver"
)

present() {
  case "$1" in
    /*) [ -x "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

need=()
missing=()
for entry in "${REQUIRED[@]}"; do
  read -r binary package <<<"$entry"
  if ! present "$binary"; then
    missing+=("$binary")
    [[ " ${need[*]-} " == *" $package "* ]] || need+=("$package")
  fi
done
if [ ${#need[@]} -eq 0 ]; then
  echo "system packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
  exit 1
fi
echo "installing system packages: ${need[*]} (missing: ${missing[*]})"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
for entry in "${REQUIRED[@]}"; do
  read -r binary package <<<"$entry"
  present "$binary" || { echo "$package was installed but $binary is still missing" >&2; exit 1; }
done
