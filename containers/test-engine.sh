#!/bin/sh
# Before the test suite (make test, CI): a Docker engine and the CPU images, so the container tests (marker containers) run the steps in
# them. Where there is no engine and this runs as root, Debian's docker.io is installed and started (no default
# bridge: containers use the host's network or none, so all traffic stays on loopback). Elsewhere it says why not
# and the container tests skip with that reason. Images are rebuilt only as far as their inputs changed (layer cache).
set -u
PYTHON=${PYTHON:-.venv/bin/python}
LOG=${TMPDIR:-/tmp}/modelpress-dockerd.log
docker_cli() {  # Debian's client builds with BuildKit without the buildx plugin; a newer client first on PATH may not
    if [ -x /usr/bin/docker ]; then echo /usr/bin/docker; else command -v docker; fi
}
engine_up() { DOCKER=$(docker_cli) && [ -n "$DOCKER" ] && "$DOCKER" info > /dev/null 2>&1; }

if ! engine_up; then
    if [ "$(id -u)" != 0 ]; then
        echo "container tests: no Docker engine and not root, so none is started here" >&2
        exit 0
    fi
    if ! command -v dockerd > /dev/null 2>&1 || ! command -v debootstrap > /dev/null 2>&1; then
        echo "container tests: installing Debian's docker.io and debootstrap" >&2
        (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io debootstrap) > "$LOG.apt" 2>&1 \
            || { echo "container tests: apt-get install docker.io failed (see $LOG.apt)" >&2; exit 0; }
    fi
    echo "container tests: starting dockerd (log: $LOG)" >&2
    nohup dockerd --bridge=none > "$LOG" 2>&1 &
    for _ in $(seq 60); do engine_up && break; sleep 1; done
    engine_up || { echo "container tests: dockerd did not start (see $LOG)" >&2; exit 0; }
fi
PATH=$(dirname "$(docker_cli)"):$PATH "$PYTHON" containers/build.py \
    || echo "container tests: the image build failed; the container tests will say which image is missing" >&2
exit 0
