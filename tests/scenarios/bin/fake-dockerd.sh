#!/bin/bash
# Main process of fake-docker.service: forks a long-lived "shim" holding a file on / (its pid in
# /run/fake-docker/shim.pid), then becomes the daemon itself, also holding a file open.
mkdir -p /var/lib/fake-docker /run/fake-docker
sleep infinity 3>>/var/lib/fake-docker/shim.log &
echo $! > /run/fake-docker/shim.pid
exec 3>>/var/lib/fake-docker/dockerd.log
exec sleep infinity
