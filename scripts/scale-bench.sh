#!/usr/bin/env bash
# The scale benchmark of issue 12: REPOS local Git repositories of STACKS_PER_REPO busybox stacks each,
# polled every 10 s by the release binary, measured from outside as a user would see it. Prints one
# markdown table:
#   - the first deploy of every stack by doco-cd, beside the same `docker compose -p P -f F up -d`
#     commands run by hand four at a time (run first, then removed), and their ratio;
#   - doco-cd's resident memory (VmRSS, VmHWM) after the first deploys and after the quiet poll rounds;
#   - per quiet poll: doco-cd's own CPU time and its children's (git), `git` and `docker` processes
#     (from `doco_cd_child_processes_total`), bytes written (`write_bytes` of /proc/PID/io, which counts
#     the reaped children too) and whether any file or directory under the data volume changed;
#   - the `/metrics` response time and size.
# Needs the Docker engine (not in Swarm mode), git, curl and python3; no registry: the stacks use the
# offline test image of scripts/test-image.sh. Everything it creates carries its own prefix
# (`scale-PID-`) and is removed at the end, also on failure or Ctrl-C.
#
#   scripts/scale-bench.sh [REPOS] [STACKS_PER_REPO]     defaults: 50 4
#   SCALE_BENCH_ROUNDS=6     quiet poll rounds of 10 s measured (default 6, i.e. 60 s)
#   SCALE_BENCH_DIR=DIR      where the repositories and the data volume go (default: a temp dir on
#                            the disk under /var/tmp; write_bytes counts nothing on a tmpfs)
#
# The repositories are served as file:// URLs (bare repositories; `git ls-remote` per poll as with a
# remote server, without an HTTP server's own cost in the figures).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

REPOS="${1:-50}"
STACKS="${2:-4}"
ROUNDS="${SCALE_BENCH_ROUNDS:-6}"
INTERVAL=10
CONCURRENCY=4
case "$REPOS$STACKS$ROUNDS" in *[!0-9]*) echo "usage: $0 [REPOS] [STACKS_PER_REPO]" >&2; exit 2 ;; esac
TOTAL=$((REPOS * STACKS))
PREFIX="scale-$$"
LABEL="doco-scale-bench=$$"

# Arithmetic on decimals (awk, so that no `bc` is needed).
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != inactive ]; then
  die "the Docker engine does not answer or is a Swarm node (doco-cd refuses to start on one)"
fi

WORK="${SCALE_BENCH_DIR:-$(mktemp -d /var/tmp/doco-scale-bench.XXXXXX)}"
mkdir -p "$WORK"
daemon_pid=""
sleeper=""

remove_containers() {
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086 # one id per word
    docker rm -f -v $ids >/dev/null 2>&1 || true
  fi
  ids=$(docker network ls -q --filter "name=$PREFIX-")
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    docker network rm $ids >/dev/null 2>&1 || true
  fi
}

stop_daemon() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2>/dev/null || true
  fi
  daemon_pid=""
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  stop_daemon
  remove_containers
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A sleep that a signal interrupts at once (bash runs a trap only after a foreground command ends).
pause() { sleep "$1" & sleeper=$!; wait "$sleeper"; sleeper=""; }

# ---------------------------------------------------------------- build and image
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doco-cd/target}"
log "building the release binary (cargo build --release -p doco-cd)"
cargo build --quiet --release --locked -p doco-cd
binary="$CARGO_TARGET_DIR/release/doco-cd"
image=$(./scripts/test-image.sh)

# ---------------------------------------------------------------- repositories
log "creating $REPOS repositories x $STACKS stacks under $WORK"
mkdir -p "$WORK/repos" "$WORK/data"
: >"$WORK/hand.list"
poll_config=""
for r in $(seq 1 "$REPOS"); do
  src="$WORK/src/r$r"
  mkdir -p "$src"
  : >"$src/.doco-cd.yml"
  for s in $(seq 1 "$STACKS"); do
    mkdir -p "$src/s$s"
    cat >"$src/s$s/compose.yml" <<EOF
services:
  app:
    image: $image
    command: ["sleep", "86400"]
    restart: unless-stopped
    network_mode: none
    stop_grace_period: 1s
    labels:
      doco-scale-bench: "$$"
EOF
    [ "$s" = 1 ] || echo "---" >>"$src/.doco-cd.yml"
    printf 'name: %s-r%s-s%s\nworking_dir: s%s\n' "$PREFIX" "$r" "$s" "$s" >>"$src/.doco-cd.yml"
    # The same stack for the run by hand, under a project name of its own.
    printf '%s-hand-r%s-s%s %s\n' "$PREFIX" "$r" "$s" "$src/s$s/compose.yml" >>"$WORK/hand.list"
  done
  git -C "$src" init -q -b main
  git -C "$src" add -A
  git -C "$src" -c user.name=bench -c user.email=bench@localhost commit -q -m "stacks"
  git clone -q --bare "$src" "$WORK/repos/r$r.git"
  poll_config+="- url: file://$WORK/repos/r$r.git
  reference: main
  interval: ${INTERVAL}s
"
done

running() { docker ps -q --filter "label=$LABEL" --filter status=running | wc -l; }

# ---------------------------------------------------------------- by hand, four at a time
log "by hand: $TOTAL x 'docker compose -p P -f F up -d', $CONCURRENCY at a time"
hand_start=$(date +%s.%N)
# shellcheck disable=SC2016 # $0 and $1 are the inner shell's: project and file of one line
xargs -P "$CONCURRENCY" -L 1 sh -c 'docker compose -p "$0" -f "$1" up -d --quiet-pull >/dev/null 2>&1 || echo "failed: $0" >&2' \
  <"$WORK/hand.list"
hand_end=$(date +%s.%N)
hand_seconds=$(calc "$hand_end - $hand_start")
[ "$(running)" -eq "$TOTAL" ] || die "by hand: $(running) of $TOTAL stacks run"
log "by hand: ${hand_seconds}s; removing them"
remove_containers
[ -z "$(docker ps -aq --filter "label=$LABEL")" ] || die "the stacks run by hand were not all removed"

# ---------------------------------------------------------------- doco-cd
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
METRICS_PORT=$(free_port)
metrics() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics"; }
# The sum of every sample of metric $1 whose labels contain $2 (e.g. program="git"), from stdin.
metric_sum() { awk -v name="$1" -v want="${2:-}" '
  /^#/ { next }
  { series = $1; n = series; sub(/\{.*/, "", n)
    if (n == name && (want == "" || index(series, want) > 0)) sum += $NF }
  END { printf "%.0f\n", sum }'; }
# utime stime cutime cstime of $1, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13, $14, $15 }'; }
status_kib() { awk -v key="$2:" '$1 == key { print $2 }' "/proc/$1/status"; }
write_bytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io"; }
volume_snapshot() { (cd "$WORK/data" && find . -printf '%y %p %s %T@\n' | sort); }

log "starting doco-cd (log: $WORK/doco-cd.log)"
start=$(date +%s.%N)
# Its log goes through a pipe, so that the log file's writes are not counted as doco-cd's.
env -i PATH="$PATH" HOME="$HOME" \
  POLL_CONFIG="$poll_config" \
  DATA_MOUNT_PATH="$WORK/data" DATA_HOST_PATH="$WORK/data" \
  HTTP_PORT="$HTTP_PORT" METRICS_PORT="$METRICS_PORT" \
  DOCO_CD_MIN_POLL_INTERVAL=1s SCHEDULER_ENABLED=false \
  "$binary" 2> >(cat >"$WORK/doco-cd.log") >/dev/null &
daemon_pid=$!

deadline=$((SECONDS + 60 + TOTAL * 3))
while [ "$(running)" -lt "$TOTAL" ]; do
  kill -0 "$daemon_pid" 2>/dev/null || { tail -n 30 "$WORK/doco-cd.log" >&2; die "doco-cd exited"; }
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 "$WORK/doco-cd.log" >&2; die "only $(running) of $TOTAL stacks run"; }
  sleep 0.5
done
first_seconds=$(calc "$(date +%s.%N) - $start")
log "doco-cd: all $TOTAL stacks run after ${first_seconds}s"
m_deploy=$(metrics)
deploy_docker=$(metric_sum doco_cd_child_processes_total 'program="docker"' <<<"$m_deploy")
deploy_git=$(metric_sum doco_cd_child_processes_total 'program="git"' <<<"$m_deploy")

# Settle: every repository completed its first poll (the deploy) and one more.
polled_twice() { metrics | awk '/^doco_cd_polls_total\{/ && $NF >= 2 { n++ } END { print n + 0 }'; }
until [ "$(polled_twice)" -ge "$REPOS" ]; do
  kill -0 "$daemon_pid" 2>/dev/null || die "doco-cd exited"
  sleep 1
done
rss_deploy=$(status_kib "$daemon_pid" VmRSS)
hwm_deploy=$(status_kib "$daemon_pid" VmHWM)

# ---------------------------------------------------------------- quiet poll rounds
log "quiet: $ROUNDS rounds of ${INTERVAL}s"
m0=$(metrics)
read -r u0 s0 cu0 cs0 < <(cpu_ticks "$daemon_pid")
w0=$(write_bytes "$daemon_pid")
volume_snapshot >"$WORK/volume.before"
pause $((ROUNDS * INTERVAL))
m1=$(metrics)
read -r u1 s1 cu1 cs1 < <(cpu_ticks "$daemon_pid")
w1=$(write_bytes "$daemon_pid")
volume_snapshot >"$WORK/volume.after"
rss_quiet=$(status_kib "$daemon_pid" VmRSS)
hwm_quiet=$(status_kib "$daemon_pid" VmHWM)
[ "$(running)" -eq "$TOTAL" ] || die "$(running) of $TOTAL stacks run after the quiet rounds"

delta() { echo $(($(metric_sum "$1" "${2:-}" <<<"$m1") - $(metric_sum "$1" "${2:-}" <<<"$m0"))); }
polls=$(delta doco_cd_polls_total)
poll_errors=$(delta doco_cd_poll_errors_total)
git_procs=$(delta doco_cd_child_processes_total 'program="git"')
docker_procs=$(delta doco_cd_child_processes_total 'program="docker"')
all_procs=$(delta doco_cd_child_processes_total)
[ "$polls" -gt 0 ] || die "no poll completed in the quiet window"
tck=$(getconf CLK_TCK)
own_ms=$(calc "($u1 - $u0 + $s1 - $s0) * 1000 / $tck / $polls")
children_ms=$(calc "($cu1 - $cu0 + $cs1 - $cs0) * 1000 / $tck / $polls")
written=$((w1 - w0))
if cmp -s "$WORK/volume.before" "$WORK/volume.after"; then
  volume_changed="no ($(wc -l <"$WORK/volume.before") entries compared)"
else
  volume_changed="YES: $(diff "$WORK/volume.before" "$WORK/volume.after" | grep -c '^[<>]') lines differ"
fi

# ---------------------------------------------------------------- /metrics
times=()
for _ in $(seq 1 11); do
  times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$METRICS_PORT/metrics")")
done
metrics_median_ms=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 6p | awk '{ printf "%.1f", $1 * 1000 }')
metrics_max_ms=$(printf '%s\n' "${times[@]}" | sort -g | tail -n 1 | awk '{ printf "%.1f", $1 * 1000 }')
metrics_bytes=$(metrics | wc -c)
metrics_series=$(metrics | grep -vc '^#')

stop_daemon

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
f1() { printf '%.1f' "$1"; }
f2() { printf '%.2f' "$1"; }
per_poll() { awk -v a="$1" -v b="$polls" 'BEGIN { printf "%.2f", a / b }'; }

cat <<EOF

### $REPOS repositories × $STACKS stacks ($TOTAL stacks), interval ${INTERVAL}s, $(date -u +%F), $(nproc) cores

| measurement | value |
|---|---|
| first deploy, doco-cd (start to all $TOTAL stacks running) | $(f1 "$first_seconds") s |
| the same \`docker compose -p P -f F up -d\` by hand, $CONCURRENCY at a time | $(f1 "$hand_seconds") s |
| ratio doco-cd / by hand | $(f2 "$(calc "$first_seconds / $hand_seconds")") |
| processes doco-cd spawned until then: \`docker\` / \`git\` (per stack) | $deploy_docker / $deploy_git ($(calc "$deploy_docker / $TOTAL" | xargs printf '%.2f') / $(calc "$deploy_git / $TOTAL" | xargs printf '%.2f')) |
| resident memory after the first deploys (VmRSS / VmHWM) | $(mib "$rss_deploy") / $(mib "$hwm_deploy") MiB |
| resident memory after $ROUNDS quiet rounds (VmRSS / VmHWM) | $(mib "$rss_quiet") / $(mib "$hwm_quiet") MiB |
| quiet polls measured ($ROUNDS rounds of ${INTERVAL}s; poll errors) | $polls ($poll_errors) |
| doco-cd's own CPU per quiet poll (utime+stime) | $(f2 "$own_ms") ms |
| its children's CPU per quiet poll (cutime+cstime: git) | $(f2 "$children_ms") ms |
| \`git\` processes per quiet poll | $(per_poll "$git_procs") ($git_procs) |
| \`docker\` processes per quiet poll | $(per_poll "$docker_procs") ($docker_procs) |
| all child processes per quiet poll | $(per_poll "$all_procs") ($all_procs) |
| bytes written in the quiet window (write_bytes, children included) | $written |
| a file or directory of the data volume changed (name, size, mtime) | $volume_changed |
| \`/metrics\` response time, median / slowest of 11 (curl time_total) | $metrics_median_ms / $metrics_max_ms ms |
| \`/metrics\` size | $metrics_bytes bytes, $metrics_series samples |
EOF
