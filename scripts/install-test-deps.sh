#!/bin/sh
# Installs what the tests need beyond Rust, from Debian's packages: a static busybox, the only
# program in the image the Docker tests build for themselves (no registry is reachable) and the
# web server of the network tests; nftables, whose nft writes the VIPs' rules; Debian's
# docker-registry and apache2-utils' htpasswd, for the registry the registry-auth test runs
# on loopback with password authentication.
set -eu
exec "$(dirname "$0")/apt-install.sh" busybox-static nftables docker-registry apache2-utils
