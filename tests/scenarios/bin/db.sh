#!/bin/bash
# A database-like writer: fd 3 stays open for writing on / ($ADE_DB_DIR/data.log) for as long as it runs.
dir=${ADE_DB_DIR:-/var/lib/ade-db}
mkdir -p "$dir"
exec 3>>"$dir/data.log"
while :; do
  echo "$(date +%s) tick" >&3
  sleep 1
done
