#!/bin/bash
# examples/fleet-rollout.sh RESOURCE_GROUP KEYVAULT VM... — encrypt the OS disks of a group of VMs with Azure Disk
# Encryption, never more at once than the group's slots (docs/fleet.md). UNTESTED HERE: it needs Azure (the project's
# tests run the semaphore against a real etcd, not this script). Each VM runs ade-prep with the same [fleet] section
# (group, endpoints, slots). For each VM, in turn and then again for those that had to wait:
#   1. on the VM (az vm run-command): `ade-prep fleet acquire` (one try; exit 5 = group full, try later);
#   2. `az vm encryption enable --volume-type OS` (ade-prep's run frees / for ADE, restores after the reboot);
#   3. wait until, on the VM, the window is closed and `fleet status --json` shows no slot recorded: restore gave
#      the slot back once every workload was back. A VM whose restore failed keeps its slot (the group stays short
#      one node until an operator fixes it and runs `ade-prep restore`), and this script stops waiting for it.
# Env: ROUND_SECS (pause between rounds, default 60), DONE_WAIT_SECS (per VM, default 14400 = 4 h), ROUNDS (default 200).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 RESOURCE_GROUP KEYVAULT VM..." >&2; exit 2; }
rg=$1 kv=$2
shift 2
pending=("$@")
declare -A started=()

on_vm() { # VM SCRIPT: the script's stdout on the VM (run-command's message), or fail
  az vm run-command invoke -g "$rg" -n "$1" --command-id RunShellScript --scripts "$2" \
    --query 'value[0].message' -o tsv
}

# Step 3 for one VM, in the background: the window closed and the slot given back.
await_release() {
  local vm=$1 deadline=$((SECONDS + ${DONE_WAIT_SECS:-14400}))
  az vm encryption enable -g "$rg" -n "$vm" --disk-encryption-keyvault "$kv" --volume-type OS >/dev/null \
    || { echo "$vm: az vm encryption enable failed (the slot stays held: see ade-prep status on the VM)"; return 1; }
  while [ $SECONDS -lt $deadline ]; do
    out=$(on_vm "$vm" 'ade-prep status --json | grep -q "\"window_open\": false" && ade-prep fleet status --json | grep -q "\"recorded\": null" && echo RELEASED' || true)
    case $out in *RELEASED*) echo "$vm: encrypted, restored, slot released"; return 0 ;; esac
    sleep 60
  done
  echo "$vm: not released after ${DONE_WAIT_SECS:-14400} s: look at \`ade-prep status\` on it"
  return 1
}

for _ in $(seq 1 "${ROUNDS:-200}"); do
  [ ${#pending[@]} -eq 0 ] && break
  next=()
  for vm in "${pending[@]}"; do
    out=$(on_vm "$vm" 'ade-prep fleet acquire; echo "exit=$?"' || echo "exit=run-command-failed")
    case $out in
      *exit=0*) echo "$vm: slot acquired; enabling ADE"; await_release "$vm" & started[$vm]=$! ;;
      *exit=5*) next+=("$vm") ;;   # the group is full: next round
      *) echo "$vm: acquire failed: $out" >&2; next+=("$vm") ;;
    esac
  done
  pending=("${next[@]+"${next[@]}"}")
  [ ${#pending[@]} -gt 0 ] && sleep "${ROUND_SECS:-60}"
done
rc=0
for vm in "${!started[@]}"; do wait "${started[$vm]}" || rc=1; done
[ ${#pending[@]} -eq 0 ] || { echo "never got a slot: ${pending[*]}" >&2; rc=1; }
exit $rc
