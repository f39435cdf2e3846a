#!/usr/bin/env bash
# The installer's time from a local HTTP server (download, verify, unpack,
# switch) into a fresh clone without cargo, and the artifact sizes; what
# `make bench` adds to its table. Needs `make dist` first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NVIM=${NVIM:-nvim}
RUNS=${RUNS:-5}
base=norgopolis-$(sh "$ROOT/scripts/native.sh" version)-$(sh "$ROOT/scripts/native.sh" platform)
[ -f "$ROOT/dist/$base.tar.gz" ] || { echo "dist/$base.tar.gz is missing: run make dist" >&2; exit 1; }
tmp=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server"; rm -rf "$tmp"' EXIT
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$ROOT/dist" >"$tmp/http.log" 2>&1 &
server=$!
for _ in $(seq 200); do grep -q 'port [0-9]*' "$tmp/http.log" && break; sleep 0.05; done
port=$(grep -o 'port [0-9]*' "$tmp/http.log" | cut -d' ' -f2)
git clone --quiet "$ROOT" "$tmp/clone"
no_cargo=$(tr ':' '\n' <<<"$PATH" | while read -r d; do [ -n "$d" ] && [ ! -x "$d/cargo" ] && echo "$d"; done | paste -sd:)
times=()
for _ in $(seq "$RUNS"); do
  start=$(date +%s%N)
  (cd "$tmp/clone" && PATH=$no_cargo NORGOPOLIS_DIST_URL=http://127.0.0.1:$port \
    "$NVIM" --headless -u NONE -i NONE -l build.lua >/dev/null)
  times+=($(( ($(date +%s%N) - start) / 1000000 )))
done
median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
size() { wc -c <"$1" | tr -d ' '; }
cur=$tmp/clone/installed/current
echo
echo "| installer (local server, $RUNS runs) | median | runs |"
echo "| --- | --- | --- |"
echo "| download, verify, unpack, switch | ${median} ms | ${times[*]} ms |"
echo
echo "| artifact ($base) | bytes |"
echo "| --- | --- |"
echo "| archive (.tar.gz) | $(size "$ROOT/dist/$base.tar.gz") |"
for f in lib/native.so bin/norgopolis-server bin/norgopolis modules/echo/echo; do
  echo "| $f | $(size "$cur/$f") |"
done
