#!/usr/bin/env bash
# The end-to-end story from two headless Neovims with the plugin: both share
# one server that the first spawns, results stream in as they are produced,
# errors are tables, events reach the other editor, the first Neovim quits
# (with a call in flight) while the second keeps working, and the server
# exits once the second quits. Runs on an isolated socket so a norgopolis
# you use yourself is not touched. Each Neovim runs scripts/demo-nvim.lua
# and obeys one command a line on its stdin.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/debug}
NVIM=${NVIM:-$ROOT/.deps/nvim/bin/nvim}
[ -x "$NVIM" ] || NVIM=$(command -v nvim || true)
if [ -z "$NVIM" ]; then
  echo "Neovim not found: run \`make deps-nvim\` or set NVIM" >&2
  exit 1
fi
for f in "$BIN/norgopolis-server" "$ROOT/target/modules/echo" "$ROOT/lua/norgopolis/native.so"; do
  [ -e "$f" ] || { echo "$f is missing: run \`make build\` first" >&2; exit 1; }
done

DEMO=$(mktemp -d /tmp/norgopolis-demo-nvim.XXXXXX)
A_PID= B_PID=
cleanup() {
  local pid
  for pid in $A_PID $B_PID; do kill -9 "$pid" 2>/dev/null || true; done
  pid=$(cat "$DEMO/run/server.pid" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT

export NORGOPOLIS_SOCKET=$DEMO/run/norgopolis.sock
export NORGOPOLIS_MODULES_DIR=$ROOT/target/modules
export NORGOPOLIS_LOG=$DEMO/server.log
export NORGOPOLIS_SERVER=$BIN/norgopolis-server

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
server_pid() { cat "$DEMO/run/server.pid" 2>/dev/null || true; }
# Running and not a zombie waiting for its reaper.
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# start NAME: a headless Neovim reading commands from a FIFO; fds 3/4 (A)
# or 5/6 (B) are our ends of its stdin and stdout.
start() {
  local name=$1
  mkfifo "$DEMO/$name.in" "$DEMO/$name.out"
  "$NVIM" --headless -u NONE -i NONE --cmd "set rtp^=$ROOT" \
    -l "$ROOT/scripts/demo-nvim.lua" "$name" <"$DEMO/$name.in" >"$DEMO/$name.out" 2>"$DEMO/$name.err" &
  if [ "$name" = A ]; then
    A_PID=$!
    exec 3>"$DEMO/A.in" 4<"$DEMO/A.out"
  else
    B_PID=$!
    exec 5>"$DEMO/B.in" 6<"$DEMO/B.out"
  fi
}

# ask NAME COMMAND: sends a command and prints that Neovim's output until
# it reports the command done (with a deadline, so a bug cannot hang us).
ask() {
  local name=$1 cmd=$2 in out line
  if [ "$name" = A ]; then in=3 out=4; else in=5 out=6; fi
  printf '%s\n' "$cmd" >&"$in"
  while true; do
    if ! IFS= read -r -t 20 line <&"$out"; then
      echo "nvim $name did not finish \"$cmd\"; its stderr:" >&2
      cat "$DEMO/$name.err" >&2
      exit 1
    fi
    [ "$line" = "--done--" ] && break
    printf '  [nvim %s] %s\n' "$name" "$line"
  done
}

say "No server is running (socket: $NORGOPOLIS_SOCKET)"
[ -e "$NORGOPOLIS_SOCKET" ] && echo "unexpected: socket exists" || echo "no socket yet"

say "Neovim A starts and attaches; finding no server, it spawns one"
start A
echo "nvim A is pid $A_PID"
ask A attach

say "Neovim B starts and attaches to the same server (same pid)"
start B
echo "nvim B is pid $B_PID"
ask B attach
ask B subscribe

say "Neovim A streams echo.count: each item reaches on_value as the module sends it (300 ms apart)"
ask A stream

say "...meanwhile Neovim B heard the server load echo for A's call"
ask B "await_event module.loaded"

say "Neovim A publishes an event; Neovim B's autocmd receives it"
ask A publish
ask B "await_event note.saved"

say "Neovim A makes a call that fails: the error is a table with the module's code and message"
ask A fail

say "Neovim B asks for the status: one server, two sessions"
ask B status

say "Neovim A starts a one-minute call and quits (:qa!) without waiting for it"
ask A sleep
PID=$(server_pid)
start_quit=$(date +%s%N)
ask A quit
wait "$A_PID" && echo "nvim A exited cleanly (status 0) $(ms_since "$start_quit") ms after :qa!" ||
  echo "nvim A exited with status $?"
A_PID=
exec 3>&- 4<&-
echo "server $PID still running? $(running "$PID" && echo yes || echo no)"

say "Neovim B keeps working: same server, its session alone, A's call cancelled"
ask B echo
ask B alone

say "Neovim B quits; it was the last client, so the server lingers 2 s and exits with its modules"
ask B quit
wait "$B_PID" || true
B_PID=
exec 5>&- 6<&-
start_wait=$(date +%s%N)
while running "$PID"; do
  if (( $(ms_since "$start_wait") > 10000 )); then echo "server did not exit"; exit 1; fi
  sleep 0.1
done
echo "server $PID exited $(ms_since "$start_wait") ms after the last Neovim quit"
[ -e "$NORGOPOLIS_SOCKET" ] && echo "socket left behind!" || echo "socket removed"

say "Server log"
sed 's/^/  /' "$NORGOPOLIS_LOG"
