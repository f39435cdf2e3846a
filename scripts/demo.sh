#!/usr/bin/env bash
# The end-to-end story, with real processes: two clients share one spawned
# server, results stream, an error comes back clearly, the first client
# leaves and the server stays, the last leaves and the server exits.
# Runs on an isolated socket so a norgopolis you use yourself is not touched.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug}
DEMO=$(mktemp -d /tmp/norgopolis-demo.XXXXXX)
trap 'kill $A_PID 2>/dev/null || true; rm -rf "$DEMO"' EXIT
A_PID=

export NORGOPOLIS_SOCKET=$DEMO/run/norgopolis.sock
export NORGOPOLIS_MODULES_DIR=$ROOT/target/modules
export NORGOPOLIS_LOG=$DEMO/server.log
export NORGOPOLIS_SERVER=$BIN/norgopolis-server
np() { "$BIN/norgopolis" --linger 2s "$@"; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
ts() { date +%T.%3N; }
server_pid() { cat "$DEMO/run/server.pid" 2>/dev/null || true; }
# Running and not a zombie waiting for its reaper.
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }

say "No server is running (socket: $NORGOPOLIS_SOCKET)"
[ -e "$NORGOPOLIS_SOCKET" ] && echo "unexpected: socket exists" || echo "no socket yet"

say "Client A starts a long call (echo.sleep 60 s); finding no server, it spawns one"
"$BIN/norgopolis" --linger 2s call echo sleep 60000 > "$DEMO/a.out" 2>&1 &
A_PID=$!
echo "client A is pid $A_PID"
# Wait until A's call is running in the server (it spawned the server first).
for _ in $(seq 100); do
  np --no-spawn status --json 2>/dev/null | grep -q '"calls_in_flight": *1' && break
  sleep 0.1
done

say "Client B asks for the status: the same server, two sessions (A and B itself)"
np status

say "Client B streams echo.count (5 items, 300 ms apart); each line is printed as it arrives"
np call echo count '{"n": 5, "delay_ms": 300}' | while IFS= read -r line; do echo "$(ts)  $line"; done

say "Client B makes a call that fails: the module's code and message come back"
np call echo fail '{"code": "NotFound", "message": "no note called inbox.norg"}' 2>&1 || echo "(exit status $?)"

PID=$(server_pid)
say "Client A leaves (killed with SIGKILL, as a crashing editor would)"
kill -9 "$A_PID"; wait "$A_PID" 2>/dev/null || true; A_PID=
echo "server $PID still running? $(running "$PID" && echo yes || echo no)"
np status

say "That status call was the last client; the server lingers 2 s, then exits with its modules"
start=$(date +%s%N)
while running "$PID"; do
  if (( ($(date +%s%N) - start) / 1000000 > 10000 )); then echo "server did not exit"; exit 1; fi
  sleep 0.1
done
echo "server $PID exited $(( ($(date +%s%N) - start) / 1000000 )) ms after the last client left"
[ -e "$NORGOPOLIS_SOCKET" ] && echo "socket left behind!" || echo "socket removed"

say "Server log"
sed 's/^/  /' "$NORGOPOLIS_LOG"
