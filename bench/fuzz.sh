#!/bin/sh
# Fuzzes every parser of outside input (src/fuzz.rs): N inputs per target (default 1 000 000), at the lowest
# priority, then the hold-list generator (a shell script: ADE_FUZZ_GENERATOR inputs, default 2000, each a run of
# it). Prints tried / accepted / found per target; exit 1 when anything was found. Not part of CI (minutes).
# Usage: bench/fuzz.sh [N] [SEED]      Figures: docs/fuzzing.md.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-1000000}
seed=${2:-24}
gen_n=${ADE_FUZZ_GENERATOR:-2000}
cd "$here"
# The fuzz profile: release, but a panic unwinds (the release profile aborts), so that each one is counted.
nice -n 19 cargo build --quiet --profile fuzz --example fuzz
target=${CARGO_TARGET_DIR:-$here/target}
status=0
nice -n 19 "$target/fuzz/examples/fuzz" all "$n" "$seed" || status=1

# The generator reads the hold list at every boot and reload: arbitrary bytes as the list, root's 0644, must give
# exit 0 and masks (links to /dev/null) named only by holdable unit names.
[ "$(id -u)" = 0 ] || { echo "generator: skipped (not root: it trusts only a root-owned list)"; exit $status; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gen="$here/packaging/usr/lib/systemd/system-generators/ade-prep-generator"
found=0
i=0
start=$(date +%s)
while [ $i -lt "$gen_n" ]; do
    head -c $(( (i * 7919 + seed) % 600 )) /dev/urandom > "$work/hold"
    # Half the inputs: real unit names and comments around the random bytes.
    if [ $((i % 2)) = 0 ]; then printf 'mongod.service\n# c\n' >> "$work/hold"; fi
    chmod 0644 "$work/hold"
    rm -rf "$work/early"
    if ! ADE_PREP_HOLD="$work/hold" nice -n 19 sh "$gen" "$work/normal" "$work/early" "$work/late" 2>/dev/null; then
        found=$((found + 1)); cp "$work/hold" "$work/../ade-fuzz-generator-$i" 2>/dev/null || true
    elif [ -d "$work/early" ]; then
        for l in "$work/early"/* "$work/early"/.*; do
            [ -e "$l" ] || [ -L "$l" ] || continue
            b=$(basename "$l"); [ "$b" = . ] || [ "$b" = .. ] && continue
            case $b in
                *.service|*.socket|*.timer|*.path) [ "$(readlink "$l")" = /dev/null ] || found=$((found + 1)) ;;
                *) found=$((found + 1)) ;;
            esac
        done
    fi
    i=$((i + 1))
done
printf '%-16s %10s %10s %6s %8s\n' generator "$gen_n" - "$found" $(( $(date +%s) - start ))
[ $found = 0 ] || status=1
exit $status
