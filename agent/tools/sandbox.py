"""Run untrusted Python in bubblewrap with rlimits and a wall timeout; Stop kills it at once.

Flags are ARCHITECTURE.md's: no network, no host environment, uid 65534, no capabilities, the host
filesystem read-only and a private /tmp. The interpreter is the system's `/usr/bin/python3`, not the
worker's venv: the sandbox runs as nobody, who cannot (and should not) read the venv or the project
tree under root-only directories; `-I` keeps PYTHON* variables and user site-packages out. Where user namespaces are unavailable
the sandbox falls back to rlimits only and logs that loudly.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

NOBODY = 65534
SANDBOX_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
BWRAP_FLAGS = [
    "--unshare-all",
    "--die-with-parent",
    "--new-session",
    "--clearenv",
    "--uid",
    str(NOBODY),
    "--gid",
    str(NOBODY),
    "--cap-drop",
    "ALL",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
]
# A sandboxed program sees only these variables (no secrets from the worker's environment).
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
}


@dataclass
class Limits:
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space; numpy's import alone reserves a few hundred MiB
    processes: int = 64
    file_bytes: int = 16 << 20
    wall_seconds: float = 15.0
    output_bytes: int = 64 << 10  # kept per stream
    flood_bytes: int = 8 << 20  # beyond this much output the program is killed


@dataclass
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False
    cancelled: bool = False
    flooded: bool = False
    sandboxed: bool = True
    duration: float = 0.0


_mode: str | None = None  # "bwrap" or "rlimit", decided by the self-test on first use
_mode_lock = threading.Lock()


def sandbox_mode() -> str:
    """Run the start-up self-test once: bwrap if it works here, else the logged rlimit-only fallback."""
    global _mode
    with _mode_lock:
        if _mode is None:
            _mode = _self_test()
        return _mode


def _self_test() -> str:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        log.error("python sandbox: bubblewrap is not installed; falling back to rlimits ONLY (no isolation)")
        return "rlimit"
    probe = "import os, socket\nprint(os.getuid(), len(socket.if_nameindex()))"
    try:
        proc = subprocess.run(
            [bwrap, *BWRAP_FLAGS, "--", SANDBOX_PYTHON, "-I", "-c", probe],
            capture_output=True,
            timeout=20,
            preexec_fn=_drop_root,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("python sandbox: bwrap self-test failed (%s); falling back to rlimits ONLY", exc)
        return "rlimit"
    out = proc.stdout.decode().split()
    # uid 65534 and only the loopback interface: user and network namespaces both work.
    if proc.returncode != 0 or out[:1] != [str(NOBODY)] or out[1:2] != ["1"]:
        log.error(
            "python sandbox: bwrap self-test failed (rc=%s, out=%r, err=%r): user namespaces are probably "
            "unavailable; falling back to rlimits ONLY (no filesystem or network isolation)",
            proc.returncode,
            proc.stdout[:200],
            proc.stderr[:500],
        )
        return "rlimit"
    log.info("python sandbox: bubblewrap self-test passed")
    return "bwrap"


def _drop_root() -> None:
    """As root, run the sandbox as nobody: root ignores RLIMIT_NPROC, so a fork bomb would be unbounded."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _own_process_count() -> int:
    uid = os.geteuid()
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _preexec(limits: Limits, nproc: int):
    def apply() -> None:
        os.setsid()  # its own process group, so Stop can kill everything it started
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _drop_root()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    return apply


def run_python(
    code: str, limits: Limits | None = None, cancelled: threading.Event | None = None
) -> RunResult:
    """Run `code`; return its (truncated) output. Never raises for anything the code does."""
    limits = limits or Limits()
    mode = sandbox_mode()
    workdir = None
    if mode == "bwrap":
        argv = [shutil.which("bwrap"), *BWRAP_FLAGS, "--chdir", "/tmp"]
        for key, value in SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        argv += ["--", SANDBOX_PYTHON, "-I", "-c", code]
        env, cwd = {}, "/"
    else:
        workdir = tempfile.mkdtemp(prefix="kimiweb-py-")
        os.chmod(workdir, 0o777)
        argv = [SANDBOX_PYTHON, "-I", "-c", code]
        env, cwd = {**SANDBOX_ENV, "HOME": workdir}, workdir
    # RLIMIT_NPROC counts every process of the user; as nobody that is only other sandboxes.
    nproc = limits.processes if os.geteuid() == 0 else _own_process_count() + limits.processes
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
            preexec_fn=_preexec(limits, nproc),
        )
    except OSError as exc:
        return RunResult("", f"could not start the sandbox: {exc}", None, sandboxed=mode == "bwrap")
    result = _supervise(proc, limits, cancelled)
    result.sandboxed = mode == "bwrap"
    if result.sandboxed and result.returncode is not None and result.returncode > 128:
        result.returncode = 128 - result.returncode  # bwrap reports "killed by signal N" as 128 + N
    result.duration = time.monotonic() - started
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _supervise(proc: subprocess.Popen, limits: Limits, cancelled: threading.Event | None) -> RunResult:
    kept = {"out": bytearray(), "err": bytearray()}
    total = [0]
    flooded = threading.Event()

    def drain(stream, buf: bytearray) -> None:
        while chunk := stream.read1(65536):
            total[0] += len(chunk)
            room = limits.output_bytes - len(buf)
            if room > 0:
                buf += chunk[:room]
            if total[0] > limits.flood_bytes:
                flooded.set()

    readers = [
        threading.Thread(target=drain, args=(proc.stdout, kept["out"]), daemon=True),
        threading.Thread(target=drain, args=(proc.stderr, kept["err"]), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + limits.wall_seconds
    timed_out = was_cancelled = False
    while proc.poll() is None:
        if cancelled is not None and cancelled.is_set():
            was_cancelled = True
        elif time.monotonic() > deadline:
            timed_out = True
        if was_cancelled or timed_out or flooded.is_set():
            _kill(proc)
            break
        time.sleep(0.02)
    proc.wait()
    for reader in readers:
        reader.join(timeout=2)

    def text(buf: bytearray) -> str:
        s = buf.decode("utf-8", errors="replace")
        return s + "\n[output truncated]" if len(buf) >= limits.output_bytes else s

    return RunResult(
        text(kept["out"]),
        text(kept["err"]),
        proc.returncode,
        timed_out=timed_out,
        cancelled=was_cancelled,
        flooded=flooded.is_set(),
    )


def _kill(proc: subprocess.Popen) -> None:
    # bwrap's pid namespace dies with it (--die-with-parent); in the fallback the group holds everything.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
