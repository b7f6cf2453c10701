#!/bin/sh
# Make a Python 3.11 base image from Debian packages alone, for builds that cannot pull from a registry
# (air-gapped clusters, CI behind a firewall): debootstrap a minimal bookworm root file system with python3, venv and
# the CA certificates, then `docker import` it. Needs root, debootstrap and a Debian package mirror.
#   containers/debian-base.sh [TAG] [MIRROR]
set -eu
TAG=${1:-modelpress-os:bookworm}
MIRROR=${2:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}
ROOTFS=$(mktemp -d)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" "$MIRROR" >&2
# No package lists or caches in the image: it is rebuilt, never upgraded in place.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
tar -C "$ROOTFS" -c . | $DOCKER import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$TAG" >&2
echo "$TAG"
