#!/bin/sh
# Installs etcd from Debian's packages, for the Raft write benchmark's side-by-side run
# (cargo run --release -p essaim-bench -- raft-writes). Nothing else needs it.
set -eu
if dpkg -s etcd-server >/dev/null 2>&1; then
    echo "etcd is already installed: $(etcd --version | head -n 1)"
    exit 0
fi
"$(dirname "$0")/apt-install.sh" etcd-server
# Debian starts a system etcd on the default ports; the benchmark starts its own members.
if [ "$(id -u)" -ne 0 ]; then
    sudo systemctl disable --now etcd >/dev/null 2>&1 || true
else
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi
etcd --version | head -n 1
