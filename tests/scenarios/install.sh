#!/bin/bash
# install.sh [--start] - installs the scenario units (units/ → /usr/local/lib/systemd/system, where packaged
# units would be: a runtime mask does not shadow a unit file in /etc/systemd/system) and their scripts
# (bin/ → /usr/local/libexec/ade-scenarios) into the running system, then reloads systemd.
# --start also starts the long-running ones: ade-db, fake-docker.socket + .service, ade-slow@1..5,
# ade-protected, ade-prestop-fails. Meant for a throwaway guest (tests/harness/nspawn-run.sh).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
install -d /usr/local/libexec/ade-scenarios
install -m 0755 "$HERE"/bin/*.sh /usr/local/libexec/ade-scenarios/
install -d /usr/local/lib/systemd/system
install -m 0644 "$HERE"/units/* /usr/local/lib/systemd/system/
systemctl daemon-reload
if [ "${1:-}" = --start ]; then
  systemctl start ade-db.service fake-docker.socket fake-docker.service ade-protected.service \
    ade-prestop-fails.service ade-slow@{1..5}.service
fi
