#!/bin/bash
# bench/scan.sh — ade-prep scan against fuser -m and lsof -t on the same load, in the same run, alternately.
# Usage: bench/scan.sh [ROUNDS]   (root recommended: otherwise every tool sees only part of /proc)
# Load: spawn-holders.py (N processes each holding M files on /var/tmp, a third for writing, one mmap, cwd there).
# Prints the median wall time and peak RSS of each tool, the ratios, and ade-prep's time per fd at ~10k and ~100k fds.
# Goals (issue 2): >= 5x faster than fuser, >= 7x faster than lsof, peak RSS <= 16 MiB, time per fd flat 10k → 100k.
# Env: SPAWN_HOLDERS (default: ../shared/bench/spawn-holders.py next to the checkout), PROCS (1000), FDS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SPAWN=${SPAWN_HOLDERS:-$(pwd)/../shared/bench/spawn-holders.py}
[ -f "$SPAWN" ] || { echo "bench/scan.sh: $SPAWN not found; set SPAWN_HOLDERS" >&2; exit 2; }
for t in fuser lsof /usr/bin/time; do command -v "$t" >/dev/null || { echo "bench/scan.sh: $t missing (apt-get install psmisc lsof time)" >&2; exit 2; }; done
cargo build --release -q
BIN=$(pwd)/target/release/ade-prep
ulimit -n 65536 2>/dev/null || true
LOADPID=

start_load() { # PROCS FDS
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  python3 "$SPAWN" --procs "$1" --fds "$2" >"$fifo" &
  LOADPID=$!
  read -r line <"$fifo"; rm -f "$fifo"
  case $line in READY*) ;; *) echo "load failed: $line" >&2; exit 1;; esac
}
stop_load() { [ -n "$LOADPID" ] && kill -TERM "$LOADPID" 2>/dev/null && wait "$LOADPID" 2>/dev/null; LOADPID=; }
trap stop_load EXIT

# measure CMD... → "seconds maxrss_kib" (output discarded)
measure() { /usr/bin/time -f '%e %M' -o /tmp/bench-time.$$ "$@" >/dev/null 2>&1 || true; cat /tmp/bench-time.$$; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run_round_robin() { # label → fills T_x and M_x
  local i; : > /tmp/bench-a.$$; : > /tmp/bench-f.$$; : > /tmp/bench-l.$$
  for i in $(seq "$ROUNDS"); do
    measure "$BIN" scan --mount / --json >> /tmp/bench-a.$$
    measure fuser -m / >> /tmp/bench-f.$$
    measure lsof -t / >> /tmp/bench-l.$$
  done
  TA=$(cut -d' ' -f1 /tmp/bench-a.$$ | median); MA=$(cut -d' ' -f2 /tmp/bench-a.$$ | sort -n | tail -1)
  TF=$(cut -d' ' -f1 /tmp/bench-f.$$ | median); MF=$(cut -d' ' -f2 /tmp/bench-f.$$ | sort -n | tail -1)
  TL=$(cut -d' ' -f1 /tmp/bench-l.$$ | median); ML=$(cut -d' ' -f2 /tmp/bench-l.$$ | sort -n | tail -1)
}

fds_seen() { "$BIN" scan --mount / --json 2>/dev/null | python3 -c 'import json,sys; print(sum(p["fds"] for p in json.load(sys.stdin)["processes"]))'; }

PROCS=${PROCS:-1000}; FDS=${FDS:-64}
echo "== load: $PROCS processes x $FDS fds on /var/tmp, $ROUNDS rounds, alternating =="
start_load "$PROCS" "$FDS"
run_round_robin
NFD=$(fds_seen)
stop_load
printf '%-10s %9s %12s\n' tool "wall(s)" "peakRSS(MiB)"
printf '%-10s %9s %12.1f\n' ade-prep "$TA" "$(echo "$MA/1024" | bc -l)"
printf '%-10s %9s %12.1f\n' fuser "$TF" "$(echo "$MF/1024" | bc -l)"
printf '%-10s %9s %12.1f\n' lsof "$TL" "$(echo "$ML/1024" | bc -l)"
sa=$(echo "if ($TA < 0.01) 0.01 else $TA" | bc -l)
printf 'ratio fuser/ade-prep = %.1fx (goal >= 5)   lsof/ade-prep = %.1fx (goal >= 7)   ade-prep peak RSS %.1f MiB (goal <= 16)\n' \
  "$(echo "$TF/$sa" | bc -l)" "$(echo "$TL/$sa" | bc -l)" "$(echo "$MA/1024" | bc -l)"
echo "fds on / seen by ade-prep: $NFD"

echo "== time per fd, ade-prep alone (median of $ROUNDS) =="
for load in "160 64" "400 256"; do
  set -- $load
  start_load "$1" "$2"
  : > /tmp/bench-a.$$
  for _ in $(seq "$ROUNDS"); do measure "$BIN" scan --mount / --json >> /tmp/bench-a.$$; done
  T=$(cut -d' ' -f1 /tmp/bench-a.$$ | median); N=$(fds_seen)
  stop_load
  printf '%7d fds: %6.3f s  %7.2f us/fd\n' "$N" "$T" "$(echo "$T*1000000/$N" | bc -l)"
done
rm -f /tmp/bench-*.$$
