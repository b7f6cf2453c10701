"""What the memory benchmarks share: a moto S3 server on loopback, and a child process's exit, peak RSS and time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

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
    """(exit status, peak RSS in MiB, seconds, stderr) of a child process. The peak is the kernel's ru_maxrss from
    os.wait4: the child's own, or that of a process it started and waited for, whichever was larger."""
    with tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
        stderr.seek(0)
        return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, seconds, stderr.read().decode()  # KiB on Linux
