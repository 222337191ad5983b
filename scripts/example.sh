#!/usr/bin/env bash
# Runs doco-cd on the bundled example: installs what is needed, builds doco-cd, turns examples/hello into
# a Git repository served over HTTP on 127.0.0.1, and starts doco-cd polling it with
# DOCO_CD_MAINTAIN_OFFLINE_STATE=true. It waits for the first deploy and shows what was deployed and
# where to look; then it stops the Git server, stops the web container, and shows doco-cd starting it
# again from the last known good state while Git is down; then it starts the Git server again and
# shows doco-cd back to normal. doco-cd and the Git server keep running in the background afterwards.
#
#   scripts/example.sh           set up and run the example
#   scripts/example.sh --stop    stop doco-cd and remove the example's containers, image and files
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

WORK="${DOCO_EXAMPLE_DIR:-/tmp/doco-cd-example}"
HTTP_PORT="${DOCO_EXAMPLE_HTTP_PORT:-18080}"
METRICS_PORT="${DOCO_EXAMPLE_METRICS_PORT:-19120}"
WEB_PORT=18081
GIT_PORT="${DOCO_EXAMPLE_GIT_PORT:-18082}"
PROJECT=doco-example

say() { printf '\n== %s\n' "$*"; }

stop_pid() {
  if [ -f "$1" ]; then
    kill "$(cat "$1")" 2>/dev/null || true
    rm -f "$1"
  fi
}

# The example's Git server: the bare repository served as static files (Git's "dumb" HTTP).
start_git_server() {
  python3 -m http.server --bind 127.0.0.1 --directory "$WORK/served" "$GIT_PORT" >"$WORK/git-server.log" 2>&1 &
  echo $! >"$WORK/git-server.pid"
}

metric() {
  /bin/busybox wget -qO- "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep "^$1" | awk '{print $2}' | head -n 1
}

# Waits up to $2 seconds for `$1` (a shell condition) to hold.
wait_until() {
  for _ in $(seq 1 "$2"); do
    eval "$1" && return 0
    sleep 1
  done
  return 1
}

stop_example() {
  stop_pid "$WORK/doco-cd.pid"
  stop_pid "$WORK/git-server.pid"
  docker compose -p "$PROJECT" down --remove-orphans >/dev/null 2>&1 || true
  docker image rm doco-example/web:1 >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

if [ "${1:-}" = "--stop" ]; then
  stop_example
  echo "example stopped and removed"
  exit 0
fi

say "installing what doco-cd needs (git, the Compose plugin, busybox for the offline base image)"
./scripts/install-deps.sh
./scripts/test-image.sh >/dev/null

say "building doco-cd"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doco-cd/target}"
cargo build --quiet --bin doco-cd
binary="$CARGO_TARGET_DIR/debug/doco-cd"

stop_example
mkdir -p "$WORK/data" "$WORK/served"
say "creating the example repository at $WORK/repo, served at http://127.0.0.1:$GIT_PORT/repo.git"
cp -r examples/hello "$WORK/repo"
git -C "$WORK/repo" init -q -b main
git -C "$WORK/repo" add -A
git -C "$WORK/repo" -c user.name=example -c user.email=example@localhost commit -q -m "the example stack"
git clone -q --bare "$WORK/repo" "$WORK/served/repo.git"
git -C "$WORK/served/repo.git" update-server-info
git -C "$WORK/repo" remote add origin "$WORK/served/repo.git"
start_git_server

say "starting doco-cd (log: $WORK/doco-cd.log)"
env -i PATH="$PATH" HOME="$HOME" \
  POLL_CONFIG="- url: http://127.0.0.1:$GIT_PORT/repo.git
  reference: main
  interval: 10s" \
  DOCO_CD_MAINTAIN_OFFLINE_STATE=true \
  DATA_MOUNT_PATH="$WORK/data" \
  HTTP_PORT="$HTTP_PORT" METRICS_PORT="$METRICS_PORT" \
  "$binary" >"$WORK/doco-cd.log" 2>&1 &
echo $! >"$WORK/doco-cd.pid"

container=""
for _ in $(seq 1 120); do
  container=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter status=running)
  [ -n "$container" ] && break
  if ! kill -0 "$(cat "$WORK/doco-cd.pid")" 2>/dev/null; then
    echo "doco-cd exited; its log:" >&2
    cat "$WORK/doco-cd.log" >&2
    exit 1
  fi
  sleep 1
done
[ -n "$container" ] || { echo "no deployment after 120 s; see $WORK/doco-cd.log" >&2; exit 1; }

say "what doco-cd did"
grep -E "cloned|deploying|deployed|poll completed" "$WORK/doco-cd.log" | head -n 8 | sed 's/^/  /'
docker ps --filter "label=com.docker.compose.project=$PROJECT" \
  --format '  container {{.Names}} ({{.ID}}) {{.Status}}'
printf '  deployed commit: %s\n' \
  "$(docker inspect --format '{{index .Config.Labels "cd.doco.deployment.target.sha"}}' "$container")"
printf '  the web page: %s\n' "$(/bin/busybox wget -qO- "http://127.0.0.1:$WEB_PORT/" 2>/dev/null | head -n 1 || true)"

say "the Git server goes down"
stop_pid "$WORK/git-server.pid"
echo "  stopped the Git server; waiting for doco-cd's next poll to find it unreachable..."
wait_until '[ "$(metric doco_cd_repository_offline)" = 1 ]' 30 || { echo "doco-cd did not notice; see $WORK/doco-cd.log" >&2; exit 1; }
grep "repository unreachable" "$WORK/doco-cd.log" | tail -n 1 | sed 's/^/  /'
echo "  doco_cd_repository_offline = $(metric doco_cd_repository_offline)"

say "healing while Git is down: stopping the web container, as a crash or 'docker stop' would"
docker stop -t 1 "$container" >/dev/null
echo "  stopped $container; waiting for the next poll (every 10 s) to start it again..."
wait_until '[ "$(docker inspect --format "{{.State.Status}}" "$container")" = running ]' 60 || true
state=$(docker inspect --format '{{.State.Status}}' "$container")
echo "  container $container is $state again (same container: started from the last known good state)"
grep "last known good state" "$WORK/doco-cd.log" | tail -n 1 | sed 's/^/  /'

say "the Git server comes back"
start_git_server
wait_until '[ "$(metric doco_cd_repository_offline)" = 0 ]' 30 || true
grep "reachable again" "$WORK/doco-cd.log" | tail -n 1 | sed 's/^/  /'
echo "  doco_cd_repository_offline = $(metric doco_cd_repository_offline); nothing was redeployed"

cat <<EOF

== where to look
  log:         tail -f $WORK/doco-cd.log
  metrics:     curl -s http://127.0.0.1:$METRICS_PORT/metrics | grep doco_cd_
  health:      curl -s http://127.0.0.1:$HTTP_PORT/v1/health
  state:       cat $WORK/data/.doco-cd/state/*.json
  repository:  $WORK/repo  (edit web/www/index.html, commit, then
               git -C $WORK/repo push -q origin main && git -C $WORK/served/repo.git update-server-info
               and doco-cd redeploys within 10 s)

== watch it heal while its Git server is down
  kill \$(cat $WORK/git-server.pid)     # the Git server goes down
  docker stop $container                 # the web container dies
  docker ps --filter label=com.docker.compose.project=$PROJECT
  within one poll interval (10 s) doco-cd starts the same container again, from the last known
  good state; the log says "repository unreachable: enforcing the last known state".

== stop the example
  scripts/example.sh --stop
EOF
