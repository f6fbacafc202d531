#!/bin/bash
# Pre-stop command of ade-prestop-fails.service: fails like a `nodetool drain` that cannot reach its node.
echo "prestop-fails: cannot drain: connection refused" >&2
exit 3
