#!/bin/bash
# bench/scan.sh [ROUNDS] - `ade-prep scan` against `fuser -m` and `lsof -t` on the same load, alternately.
# Run as root (otherwise every tool sees only part of /proc). Load: bench/holders.py, PROCS processes (1000) each
# holding FDS files (64) under /var/tmp, every third for writing, one mapped, cwd there.
# Prints each tool's median wall time and peak RSS, the ratios, and ade-prep's time per process and per fd at about
# 10k and 100k fds. Goals (issue 2): >= 5x faster than fuser, >= 7x faster than lsof, peak RSS <= 16 MiB, time per
# fd flat from 10k to 100k fds. The goals are printed, never asserted: this machine is shared and noisy.
# Every run is checked, and the bench fails (exit 1) on any of: a tool that exits non-zero, a load that did not
# start whole (its pid count), a holder of the load that a tool missed, or a process that ade-prep and fuser (or lsof) do not
# both report while it lived through the whole run (both sides are compared). Exit 2: usage or a missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
case $ROUNDS in '' | *[!0-9]* | 0) echo "usage: bench/scan.sh [ROUNDS >= 1]" >&2; exit 2;; esac
for t in fuser lsof /usr/bin/time python3 bc; do
  command -v "$t" >/dev/null || { echo "bench/scan.sh: $t missing (apt-get install psmisc lsof time bc)" >&2; exit 2; }
done
cargo build --release -q
BIN=$(pwd)/target/release/ade-prep
ulimit -n 65536 2>/dev/null || true
W=$(mktemp -d /var/tmp/ade-bench.XXXXXX)
LOADPID=

fail() { echo "bench/scan.sh: FAILED: $*" >&2; exit 1; }
stop_load() {
  if [ -n "$LOADPID" ]; then kill -TERM "$LOADPID" 2>/dev/null || true; wait "$LOADPID" 2>/dev/null || true; fi
  LOADPID=
  rm -rf "$W/files"
}
trap 'stop_load; rm -rf "$W"' EXIT

# start_load PROCS FDS: starts the holders and checks that all PROCS of them hold their files.
start_load() {
  mkdir -p "$W/files"; rm -f "$W/pids" "$W/ready"
  python3 bench/holders.py "$1" "$2" "$W/files" "$W/pids" >"$W/ready" &
  LOADPID=$!
  local i
  for i in $(seq 600); do
    [ -s "$W/ready" ] && break
    kill -0 "$LOADPID" 2>/dev/null || fail "the load ($1 x $2) ended before it was ready"
    sleep 0.1
    [ "$i" = 600 ] && fail "the load ($1 x $2) was not ready within 60 s"
  done
  local got; got=$(cat "$W/ready")
  [ "$got" = "READY $1" ] || fail "the load started $got of $1 holders"
  [ "$(wc -l <"$W/pids")" = "$1" ] || fail "the load's pid file has $(wc -l <"$W/pids") lines, not $1"
}

# measure LABEL CMD...: runs CMD under GNU time, output kept in $W/out.LABEL; appends "secs maxrss_kib" to
# $W/t.LABEL; fails the bench when CMD exits non-zero.
measure() {
  local label=$1; shift
  local rc=0
  /usr/bin/time -f '%e %M' -o "$W/time" "$@" >"$W/out.$label" 2>"$W/err.$label" || rc=$?
  [ "$rc" = 0 ] || fail "$label exited $rc: $(tail -n 3 "$W/err.$label" | tr '\n' ' ')"
  tail -n 1 "$W/time" >>"$W/t.$label"
}

# pids LABEL: the pids a tool's last output names, sorted, one a line.
pids() {
  case $1 in
    ade-prep) python3 -c 'import json,sys; [print(p["pid"]) for p in json.load(open(sys.argv[1]))["processes"]]' "$W/out.ade-prep" ;;
    fuser) grep -oE '[0-9]+' "$W/out.fuser" ;;
    lsof) grep . "$W/out.lsof" ;;
  esac | sort -u
}

# check_round: every holder of the load is in every tool's output, and ade-prep agrees with fuser and lsof on every process
# that was alive before the round and still is after it (each tool leaves itself out; processes born or ended
# during the round are not comparable).
check_round() {
  local t
  for t in ade-prep fuser lsof; do
    pids "$t" >"$W/p.$t"
    local missed; missed=$(sort -u "$W/pids" | comm -23 - "$W/p.$t" | head -n 5 | tr '\n' ' ')
    [ -z "$missed" ] || fail "$t missed holders of the load: $missed"
  done
  local p only
  for pair in "ade-prep fuser" "fuser ade-prep" "ade-prep lsof" "lsof ade-prep"; do
    read -r a b <<<"$pair"
    set -- "$a" "$b"
    only=
    for p in $(comm -23 "$W/p.$1" "$W/p.$2"); do
      grep -qx "$p" "$W/before" && [ -d "/proc/$p" ] && only="$only $p($(cat "/proc/$p/comm" 2>/dev/null))"
    done
    [ -z "$only" ] || fail "only $1 reports these processes, alive through the round:$only"
  done
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
peak() { sort -n | tail -n 1; }

PROCS=${PROCS:-1000}; FDS=${FDS:-64}
echo "== load: $PROCS processes x $FDS fds under /var/tmp, $ROUNDS rounds, the tools alternating =="
start_load "$PROCS" "$FDS"
rm -f "$W"/t.*
for _ in $(seq "$ROUNDS"); do
  (cd /proc && printf '%s\n' [0-9]*) | sort -u >"$W/before"
  measure ade-prep "$BIN" scan --mount / --json
  measure fuser fuser -m /
  measure lsof lsof -t /
  check_round
done
SEEN=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["processes"]), sum(p["fds"] for p in d["processes"]))' "$W/out.ade-prep")
stop_load
TA=$(cut -d' ' -f1 "$W/t.ade-prep" | median); MA=$(cut -d' ' -f2 "$W/t.ade-prep" | peak)
TF=$(cut -d' ' -f1 "$W/t.fuser" | median); MF=$(cut -d' ' -f2 "$W/t.fuser" | peak)
TL=$(cut -d' ' -f1 "$W/t.lsof" | median); ML=$(cut -d' ' -f2 "$W/t.lsof" | peak)
# GNU time prints 2 decimals: a run under 0.01 s shows as 0.00.
SA=$(echo "if ($TA < 0.01) 0.01 else $TA" | bc -l)
printf '%-10s %9s %12s\n' tool "wall(s)" "peakRSS(MiB)"
printf '%-10s %9s %12.1f\n' ade-prep "$TA" "$(echo "$MA/1024" | bc -l)"
printf '%-10s %9s %12.1f\n' fuser "$TF" "$(echo "$MF/1024" | bc -l)"
printf '%-10s %9s %12.1f\n' lsof "$TL" "$(echo "$ML/1024" | bc -l)"
printf 'ratio fuser/ade-prep = %.1fx (goal >= 5)   lsof/ade-prep = %.1fx (goal >= 7)   ade-prep peak RSS %.1f MiB (goal <= 16)\n' \
  "$(echo "$TF/$SA" | bc -l)" "$(echo "$TL/$SA" | bc -l)" "$(echo "$MA/1024" | bc -l)"
read -r NH NFD <<<"$SEEN"
echo "every round: the $PROCS holders found by all three tools; ade-prep, fuser and lsof agreed on the rest ($NH holders of /, $NFD fds)"

echo "== time per process and per fd, ade-prep alone (median of $ROUNDS) =="
for load in "160 64" "400 256"; do
  read -r a b <<<"$load"
  set -- "$a" "$b"
  start_load "$1" "$2"
  rm -f "$W/t.ade-prep"
  for _ in $(seq "$ROUNDS"); do measure ade-prep "$BIN" scan --mount / --json; done
  pids ade-prep >"$W/p.ade-prep"
  missed=$(sort -u "$W/pids" | comm -23 - "$W/p.ade-prep" | wc -l)
  [ "$missed" = 0 ] || fail "ade-prep missed $missed holders of the $1 x $2 load"
  T=$(cut -d' ' -f1 "$W/t.ade-prep" | median)
  read -r NP NF < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["processes_seen"], sum(p["fds"] for p in d["processes"]))' "$W/out.ade-prep")
  stop_load
  printf '%7d fds, %5d processes: %6.3f s  %7.2f us/fd  %7.1f us/process\n' "$NF" "$NP" "$T" \
    "$(echo "$T*1000000/$NF" | bc -l)" "$(echo "$T*1000000/$NP" | bc -l)"
done
