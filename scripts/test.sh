#!/usr/bin/env bash
# Installs what the tests need (scripts/install-deps.sh), then runs every check CI runs: formatting,
# clippy, and the whole test suite (unit, git tier, Docker tier, end-to-end). Set DOCO_REQUIRE_DOCKER=1
# to make Docker-backed tests fail instead of skipping when no engine answers (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
# Build once per machine, not once per clone: CI runs in a fresh clone and reuses this cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doco-cd/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if docker info >/dev/null 2>&1; then
  image=$(./scripts/test-image.sh --tag)
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    # Built for this run, so removed after it (also on failure).
    cleanup_image() { docker image rm -f "$image" >/dev/null 2>&1 || true; }
    trap cleanup_image EXIT
  fi
  ./scripts/test-image.sh >/dev/null
elif [ "${DOCO_REQUIRE_DOCKER:-0}" = 1 ]; then
  echo "test.sh: DOCO_REQUIRE_DOCKER=1 but the Docker engine does not answer" >&2
  exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"; if declare -F cleanup_image >/dev/null; then cleanup_image; fi' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "summary: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
