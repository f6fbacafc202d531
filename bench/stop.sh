#!/bin/bash
# bench/stop.sh [ADE_PREP_BIN] - issue 3 §3: five units that each take 2 s to stop (tests/scenarios ade-slow@1..5,
# ExecStop=sleep 2), in a real systemd 252 booted with tests/harness/nspawn-run.sh. Times `ade-prep prepare`
# (stops them concurrently: about as long as the slowest, at most 3 s), stopping the same five one after another
# with `systemctl stop`, their ratio, and `ade-prep restore`. Run as root on the host after `cargo build`;
# ADE_PREP_BIN defaults to target/debug/ade-prep. BENCH_ROUNDS (default 3) rounds, the median of each is printed.
# Exit: 0, or 1 when prepare took longer than 3 s or was not faster than the sequential stops.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != --inside ]; then
  BIN=$(realpath "${1:-$HERE/target/debug/ade-prep}")
  [ -x "$BIN" ] || { echo "bench/stop.sh: no $BIN (cargo build first)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "bench/stop.sh: run as root (systemd-nspawn)" >&2; exit 2; }
  # The binary is bound read-only at /ade-bench/ade-prep; the worktree at /work.
  NSPAWN_BIND_RO="$(dirname "$BIN"):/ade-bench" exec "$HERE/tests/harness/nspawn-run.sh" -t 600 "$HERE" \
    "BENCH_ROUNDS=${BENCH_ROUNDS:-3} bench/stop.sh --inside /ade-bench/$(basename "$BIN")"
fi

# ---- inside the container ----
BIN=$2
ROUNDS=${BENCH_ROUNDS:-3}
UNITS=(ade-slow@{1..5}.service)
tests/scenarios/install.sh
install -d -m 0755 /etc/ade-prep/config.d
cat > /etc/ade-prep/config.d/50-bench.toml <<'EOF'
[workloads.slow]
units = ["ade-slow@*.service"]
EOF
chmod 0644 /etc/ade-prep/config.d/50-bench.toml

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Started, and each main process exec'd (so that a scan finds it in its unit).
start_all() {
  systemctl start "${UNITS[@]}"
  for u in "${UNITS[@]}"; do
    pid=$(systemctl show -P MainPID "$u")
    for _ in $(seq 50); do [ "$(cat "/proc/$pid/comm")" = sleep ] && break; sleep 0.1; done
  done
}

P=() S=() R=()
for round in $(seq "$ROUNDS"); do
  start_all
  t0=$(now); "$BIN" prepare --force distro >/dev/null; t1=$(now)
  for u in "${UNITS[@]}"; do [ "$(systemctl is-active "$u")" = inactive ] || { echo "$u still $(systemctl is-active "$u")" >&2; exit 1; }; done
  t2=$(now); "$BIN" restore >/dev/null; t3=$(now)
  for u in "${UNITS[@]}"; do [ "$(systemctl is-active "$u")" = active ] || { echo "$u not back" >&2; exit 1; }; done
  # The same five, stopped one after another.
  start_all
  t4=$(now); for u in "${UNITS[@]}"; do systemctl stop "$u"; done; t5=$(now)
  P+=("$(secs "$t0" "$t1")") R+=("$(secs "$t2" "$t3")") S+=("$(secs "$t4" "$t5")")
  echo "round $round: prepare ${P[-1]} s, one after another ${S[-1]} s, restore ${R[-1]} s"
done
p=$(median "${P[@]}") s=$(median "${S[@]}") r=$(median "${R[@]}")
ratio=$(awk -v s="$s" -v p="$p" 'BEGIN { printf "%.1f", s / p }')
echo "five units with a 2 s stop, median of $ROUNDS:"
echo "  ade-prep prepare (concurrent stops):  $p s"
echo "  systemctl stop one after another:     $s s"
echo "  ratio (sequential / prepare):         ${ratio}x"
echo "  ade-prep restore:                     $r s"
awk -v p="$p" -v s="$s" 'BEGIN { exit !(p <= 3 && p < s) }' || { echo "prepare is not about as long as the slowest stop" >&2; exit 1; }
