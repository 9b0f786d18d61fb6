"""Starts the extraction child with resource limits and yields its events as they arrive.

Limits: RLIMIT_AS (address space), RLIMIT_CPU (CPU seconds), RLIMIT_FSIZE 0 (it writes no files),
RLIMIT_CORE 0, its own session (so the whole group is killed), a clean environment; and a wall-clock
deadline after which the parent kills it. Whatever happens, the last event is "done" or "error".
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from .formats import Limits

ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the documents package
MAX_LINE = 1 << 20


def _limit(memory_bytes: int, cpu_seconds: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def stream(path: str, kind: str, limits: Limits, *, timeout: float, memory_bytes: int) -> Iterator[dict]:
    """The child's events for one file; an "error" event (never an exception) when it fails, is
    killed or runs past `timeout` seconds. Closing the iterator early kills the child."""
    spec = json.dumps({"path": path, "kind": kind, "limits": asdict(limits)})
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": ROOT,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/nonexistent",
    }
    proc = subprocess.Popen(
        [sys.executable, "-s", "-m", "documents.extract.child", spec],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=_limit(memory_bytes, max(1, int(timeout))),
        close_fds=True,
    )
    deadline = time.monotonic() + timeout
    buffer = b""
    ended = False
    fd = proc.stdout.fileno()
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill(proc)
                yield {
                    "event": "error",
                    "message": f"Reading the file took longer than {timeout:.0f} s; it was stopped.",
                    "detail": "timeout",
                }
                return
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                event = json.loads(line)
                if event["event"] in ("done", "error"):
                    ended = True
                yield event
            if len(buffer) > MAX_LINE:
                _kill(proc)
                yield {"event": "error", "message": "The file could not be read.", "detail": "line too long"}
                return
        code = proc.wait()
        if not ended:
            if code == -signal.SIGXCPU or code == -signal.SIGKILL:
                message = "Reading the file used more CPU time than allowed; it was stopped."
            elif code < 0:
                message = "The file could not be read: the reader was stopped (too much memory?)."
            else:
                message = "The file could not be read: the reader stopped unexpectedly."
            yield {"event": "error", "message": message, "detail": f"exit {code}"}
    finally:
        if proc.poll() is None:
            _kill(proc)
        proc.stdout.close()
