#!/bin/sh
# Installs the Debian packages named that are not installed yet: apt-install.sh PACKAGE...
# The one way the project's scripts install what they need.
set -eu
missing=
for package in "$@"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing="$missing $package"
    fi
done
if [ -z "$missing" ]; then
    echo "already installed: $*"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update -q
# shellcheck disable=SC2086 # one word per package
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
