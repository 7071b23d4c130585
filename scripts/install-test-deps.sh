#!/bin/sh
# Installs what the tests need beyond Rust, from Debian's packages: a static busybox, the only
# program in the image the Docker tests build for themselves (no registry is reachable).
set -eu
if [ -x /bin/busybox ] && /bin/busybox --help 2>&1 | head -n 1 | grep -q BusyBox \
    && file -L /bin/busybox 2>/dev/null | grep -q "statically linked"; then
    echo "busybox-static is already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static
