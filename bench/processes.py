"""What the memory benchmarks share: a moto S3 server on loopback, and a child process's exit, peak RSS and time."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def start_s3_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process on 127.0.0.1, once it accepts connections; and its endpoint."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("moto server did not start")


def run_measured(command: list[str], env: dict) -> tuple[int, float, float, str]:
    """(exit status, peak RSS in MiB, seconds, stderr) of a child process and the processes it starts.

    The peak is the larger of the child's own high-water mark (VmHWM, read until it exits) and the largest sum of
    the RSS of the child and its descendants sampled every 0.1 s. Not ru_maxrss from wait4: on Linux a child's
    ru_maxrss starts from its parent's resident size at fork, so it would report the benchmark's own memory.
    """
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        peak_kib = 0
        while child.poll() is None:
            tree = [child.pid, *descendants(child.pid)]
            peak_kib = max(peak_kib, _status_kib(child.pid, "VmHWM"), sum(_status_kib(pid, "VmRSS") for pid in tree))
            time.sleep(0.1)
        seconds = time.monotonic() - started
        stderr.seek(0)
        return child.returncode, peak_kib / 1024, seconds, stderr.read().decode()


def descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited while we looked
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
