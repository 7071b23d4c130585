#!/bin/sh
# Installs etcd from Debian's packages, for the Raft write benchmark's side-by-side run
# (cargo run --release -p essaim-bench -- raft-writes). Nothing else needs it.
set -eu
if command -v etcd >/dev/null 2>&1; then
    echo "etcd is already installed: $(etcd --version | head -n 1)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server
# Debian starts a system etcd on the default ports; the benchmark starts its own members.
$SUDO systemctl disable --now etcd >/dev/null 2>&1 || true
etcd --version | head -n 1
