"""Child-process helpers shared by the engine and gateway launchers: wait for the ready line, read a log tail."""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time


def log_tail(path: str, n: int = 2000) -> str:
    """The last ``n`` bytes of a child's log file, for start-up errors ('' if it cannot be read)."""
    with contextlib.suppress(OSError), open(path, "rb") as f:
        data = f.read()
        return data[-n:].decode(errors="replace").strip()
    return ""


def read_ready_url(
    proc: subprocess.Popen[bytes], deadline: float, prefix: str, lines: list[str] | None = None
) -> str | None:
    """Read ``proc``'s stdout until a line starting with ``prefix`` and return the URL after it; None if the
    process exits or ``deadline`` (monotonic) passes first. Other lines go to ``lines`` when given.

    Shared by the engine and gateway launchers: a child prints its URL once its socket is bound and it can
    answer, so the parent never polls a port that is not open yet.
    """
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace")
                if line.startswith(prefix):
                    return line[len(prefix) :].split()[0]
                if lines is not None:
                    lines.append(line)
    finally:
        sel.close()
    return None
