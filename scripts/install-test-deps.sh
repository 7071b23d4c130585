#!/bin/sh
# Installs what the tests need beyond Rust, from Debian's packages: a static busybox, the only
# program in the image the Docker tests build for themselves (no registry is reachable).
set -eu
exec "$(dirname "$0")/apt-install.sh" busybox-static
