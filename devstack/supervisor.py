"""The `make run` supervisor: keeps each process of the stack running, and leaves nothing behind.

Every program runs in a session (and process group) of its own, with `PR_SET_PDEATHSIG` set to
SIGKILL, so it dies with the supervisor even when the supervisor is SIGKILLed. When a program exits,
its whole group is killed (a Celery main process that died leaves no pool or beat child holding the
log pipe or a port) and the program alone is started again after a backoff that doubles on each quick
failure (0.5 s up to 30 s) and resets once it has run for `stable_seconds`. SIGINT, SIGTERM and SIGHUP
stop every group: SIGTERM, then SIGKILL after `stop_timeout`. Output goes to the terminal, each line
prefixed with the program's name.

All children are started from the thread that calls `run()`: the kernel sends PDEATHSIG when the
*thread* that forked a child ends, so a child started from a short-lived thread would die with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
COLORS = ["36", "33", "32", "35", "34", "31"]


@dataclass
class Program:
    """One supervised process: a name for its log prefix and a command line."""

    name: str
    command: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    run_as: dict = field(default_factory=dict)  # Popen's user= and group=, e.g. for Postgres as root


@dataclass
class _Running:
    program: Program
    color: str
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # quick exits in a row: sets the backoff
    restart_at: float | None = None
    readers: list[threading.Thread] = field(default_factory=list)


def _die_with_parent(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child between fork and exec, already in its new session.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


class Supervisor:
    def __init__(
        self,
        programs: list[Program],
        *,
        output: TextIO | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        stable_seconds: float = 10.0,
        stop_timeout: float = 10.0,
        color: bool | None = None,
    ):
        names = [p.name for p in programs]
        if len(set(names)) != len(names):
            raise ValueError(f"program names must be unique: {names}")
        self.output = output or sys.stdout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.stable_seconds = stable_seconds
        self.stop_timeout = stop_timeout
        use_color = self.output.isatty() if color is None else color
        self.width = max(len(n) for n in [*names, "supervisor"])
        self.programs = {
            p.name: _Running(p, COLORS[i % len(COLORS)] if use_color else "") for i, p in enumerate(programs)
        }
        self._write_lock = threading.Lock()
        self._stopping = threading.Event()

    # -- what callers and tests read --------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        proc = self.programs[name].proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def restarts(self, name: str) -> int:
        return self.programs[name].restarts

    def stop(self) -> None:
        """Ask `run()` to stop every program and return (safe from any thread or a signal handler)."""
        self._stopping.set()

    # -- output -----------------------------------------------------------------------------------

    def say(self, name: str, line: str, color: str = "") -> None:
        prefix = f"{time.strftime('%H:%M:%S')} {name.ljust(self.width)} | "
        if color:
            prefix = f"\033[{color}m{prefix}\033[0m"
        with self._write_lock:
            try:
                self.output.write(prefix + line.rstrip("\n") + "\n")
                self.output.flush()
            except (OSError, ValueError):
                pass  # the terminal went away; the programs keep running until they are stopped

    def _pump(self, name: str, color: str, stream) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.say(name, raw.decode(errors="replace"), color)

    # -- process groups ---------------------------------------------------------------------------

    def _start(self, entry: _Running) -> None:
        program = entry.program
        entry.restart_at = None
        try:
            entry.proc = subprocess.Popen(
                program.command,
                cwd=program.cwd,
                env=program.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
                **program.run_as,
            )
        except OSError as error:
            self.say("supervisor", f"{program.name} could not start: {error}")
            entry.proc = None
            self._schedule_restart(entry)
            return
        entry.started = time.monotonic()
        reader = threading.Thread(
            target=self._pump, args=(program.name, entry.color, entry.proc.stdout), daemon=True
        )
        reader.start()
        entry.readers = [r for r in entry.readers if r.is_alive()] + [reader]
        self.say("supervisor", f"{program.name} started (pid {entry.proc.pid})")

    def _kill_group(self, pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _group_alive(self, pid: int) -> bool:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _schedule_restart(self, entry: _Running) -> None:
        ran = time.monotonic() - entry.started if entry.started else 0.0
        entry.failures = 0 if ran >= self.stable_seconds else entry.failures + 1
        delay = min(self.max_backoff, self.backoff * 2 ** max(entry.failures - 1, 0))
        entry.restart_at = time.monotonic() + delay
        self.say("supervisor", f"{entry.program.name} restarts in {delay:.1f} s")

    def _reap(self, entry: _Running) -> None:
        proc = entry.proc
        if proc is None or proc.poll() is None:
            return
        # The leader is gone; whatever it left in its group (pool children, beat) goes with it.
        self._kill_group(proc.pid, signal.SIGKILL)
        code = proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        self.say("supervisor", f"{entry.program.name} {how}")
        entry.proc = None
        entry.restarts += 1
        self._schedule_restart(entry)

    # -- the foreground loop ----------------------------------------------------------------------

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        """Start every program, keep them running until SIGINT/SIGTERM/SIGHUP or `stop()`, stop them.

        Returns 0 after a requested stop. Must be called from the main thread (it installs signal
        handlers); `on_started` runs once every program has been started.
        """
        previous = {
            sig: signal.signal(sig, lambda signum, frame: self.stop())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        try:
            for entry in self.programs.values():
                if not self._stopping.is_set():
                    self._start(entry)
            if on_started is not None:
                on_started()
            while not self._stopping.wait(0.1):
                for entry in self.programs.values():
                    self._reap(entry)
                    if entry.proc is None and entry.restart_at is not None:
                        if time.monotonic() >= entry.restart_at:
                            self._start(entry)
            return 0
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _shutdown(self) -> None:
        # Signals are blocked from here on: a second Ctrl-C must not interrupt the clean-up half-way.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            leaders = [e.proc.pid for e in self.programs.values() if e.proc is not None]
            self.say("supervisor", "stopping " + ", ".join(self.programs))
            for pid in leaders:
                self._kill_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            for entry in self.programs.values():
                if entry.proc is not None:
                    try:
                        entry.proc.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
            # Children that outlive their leader keep the group: they get the same deadline.
            while any(self._group_alive(pid) for pid in leaders) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in leaders:
                self._kill_group(pid, signal.SIGKILL)
            for entry in self.programs.values():
                if entry.proc is not None:
                    entry.proc.wait()
                    entry.proc = None
                for reader in entry.readers:
                    reader.join(timeout=2)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


def parse_procfile(text: str) -> list[tuple[str, str]]:
    """`name: command` lines of a Procfile (comments and blank lines skipped), in order."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"not a Procfile line: {line!r}")
        entries.append((name.strip(), command.strip()))
    return entries


def procfile_programs(
    path: Path, names: list[str], env: dict[str, str], cwd: Path | None = None
) -> list[Program]:
    """The Procfile's programs named in `names`, run by `sh -c 'exec ...'` in `env`: the shell expands
    their `$VAR`s and then becomes the program, so the program itself leads its group."""
    entries = dict(parse_procfile(Path(path).read_text()))
    missing = [n for n in names if n not in entries]
    if missing:
        raise ValueError(f"not in {path}: {', '.join(missing)}")
    return [Program(n, ["/bin/sh", "-c", f"exec {entries[n]}"], env=env, cwd=cwd) for n in names]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m devstack.supervisor", description=__doc__)
    parser.add_argument("--procfile", type=Path, default=Path("Procfile"))
    parser.add_argument("--stop-timeout", type=float, default=10.0)
    parser.add_argument("--backoff", type=float, default=0.5)
    parser.add_argument("names", nargs="*", help="programs to run (default: all)")
    args = parser.parse_args(argv)
    names = args.names or [name for name, _ in parse_procfile(args.procfile.read_text())]
    programs = procfile_programs(args.procfile, names, dict(os.environ))
    return Supervisor(programs, stop_timeout=args.stop_timeout, backoff=args.backoff).run()


if __name__ == "__main__":
    sys.exit(main())
