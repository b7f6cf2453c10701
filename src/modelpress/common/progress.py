"""Progress lines on stderr (stdout stays for results), readable in a terminal, a pod log and the KFP UI."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)
