#!/usr/bin/env bash
# Installs what the tests need (scripts/install-deps.sh), builds the container image
# (scripts/build-image.sh) when Docker answers, then runs every check CI runs: formatting, clippy, and
# the whole test suite (unit, git tier, Docker tier, end-to-end, the container image). Set
# DOCO_REQUIRE_DOCKER=1 to make Docker-backed tests fail instead of skipping when no engine answers (CI
# does). Ends with one line per phase and its duration.
set -euo pipefail
cd "$(dirname "$0")/.."

# One "phase seconds" line per finished phase, printed at the end (also on failure).
phases=()
phase=""
phase_start=0
begin() { echo "== $1"; phase=$1; phase_start=$(date +%s); }
finish() {
  phases+=("$(printf '%-8s %5ss%s' "$phase" "$(($(date +%s) - phase_start))" "${1:-}")")
  phase=""
}
summary() {
  [ -z "$phase" ] || finish " (failed)"
  [ "${#phases[@]}" -gt 0 ] || return 0
  echo "phases:"
  printf '  %s\n' "${phases[@]}"
}
cleanups=()
on_exit() {
  local status=$?
  for cleanup in "${cleanups[@]}"; do eval "$cleanup"; done
  summary
  exit "$status"
}
trap on_exit EXIT

begin install
./scripts/install-deps.sh
finish
# Build once per machine, not once per clone: CI runs in a fresh clone and reuses this cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doco-cd/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if docker info >/dev/null 2>&1; then
  begin image
  image=$(./scripts/test-image.sh --tag)
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    # Built for this run, so removed after it (also on failure).
    cleanups+=("docker image rm -f '$image' >/dev/null 2>&1 || true")
  fi
  ./scripts/test-image.sh >/dev/null
  # A tag of this run's own, so that runs beside this one never remove the image it tests; the base
  # image under it stays cached for the next run.
  export DOCO_CD_IMAGE="${DOCO_CD_IMAGE:-doco-cd/doco-cd:test-$$}"
  if ! docker image inspect "$DOCO_CD_IMAGE" >/dev/null 2>&1; then
    cleanups+=("docker image rm -f '$DOCO_CD_IMAGE' >/dev/null 2>&1 || true")
  fi
  ./scripts/build-image.sh >/dev/null
  finish
elif [ "${DOCO_REQUIRE_DOCKER:-0}" = 1 ]; then
  echo "test.sh: DOCO_REQUIRE_DOCKER=1 but the Docker engine does not answer" >&2
  exit 1
fi

begin fmt
cargo fmt --all -- --check
finish
begin clippy
cargo clippy --workspace --all-targets --locked -- -D warnings
finish
begin test
log=$(mktemp)
cleanups+=("rm -f '$log'")
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
finish
# The Swarm phase, last and alone: doco-cd behaves differently on a Swarm manager, so no other test may
# run meanwhile. The engine is switched to a single-node Swarm and back, also on failure.
if docker info >/dev/null 2>&1; then
  begin swarm
  if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ]; then
    echo "test.sh: the engine is already a Swarm node (not by this run); skipping the Swarm phase" >&2
  else
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    cleanups+=("docker swarm leave --force >/dev/null 2>&1 || true")
    DOCO_SWARM_PHASE=1 cargo test --locked -p doco-cd --test swarm 2>&1 | tee -a "$log" || status=$?
    docker swarm leave --force >/dev/null
  fi
  finish
fi
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "summary: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
